//! Access control and the audit trail through the real server: what each role can and
//! cannot read and write on every read path, field rules, sign-in, bad credentials, and
//! the hash chain catching a tampered row.

mod common;

use std::collections::BTreeMap;

use common::{Backend, TestApp, spawn_app, spawn_app_with_config};
use leadgate::access::RoleSection;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    each_role_reaches_only_its_rows_kinds_and_fields,
    writes_to_refused_fields_write_nothing,
    audit_rows_carry_who_where_and_a_tampered_row_breaks_the_chain,
    concurrent_writers_keep_one_unbroken_chain,
    a_team_list_merges_its_owners_in_order_and_pages,
    a_chain_kept_as_hex_text_still_verifies_once_stored_as_bytes,
    audit_lookups_find_rows_on_both_sides_of_the_indexed_mark,
);

struct Org {
    director: String,
    manager: String,
    rep_a: String,
    rep_a_id: String,
    rep_b_id: String,
    rep_c_id: String,
    finance: String,
    support: String,
    auditor: String,
    leads: BTreeMap<&'static str, String>,
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("user-agent", "access-test/1.0");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(app, reqwest::Method::GET, token, path, None).await
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(app, reqwest::Method::POST, token, path, Some(body)).await
}

async fn patch(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(app, reqwest::Method::PATCH, token, path, Some(body)).await
}

async fn user(app: &TestApp, email: &str, role: &str, team: Option<&str>) -> (String, String) {
    let (status, user) = post(
        app,
        &app.admin_token,
        "/v1/admin/users",
        json!({"email": email, "name": email, "role": role, "team_id": team}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().expect("user id").to_owned();
    let (status, token) = post(
        app,
        &app.admin_token,
        &format!("/v1/admin/users/{id}/tokens"),
        json!({"name": "test"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    (id, token["token"].as_str().expect("token").to_owned())
}

async fn team(app: &TestApp, name: &str, parent: Option<&str>) -> String {
    let (status, team) = post(
        app,
        &app.admin_token,
        "/v1/admin/teams",
        json!({"name": name, "parent_id": parent}),
    )
    .await;
    assert_eq!(status, 201, "{team}");
    team["id"].as_str().expect("team id").to_owned()
}

async fn create(app: &TestApp, kind: &str, fields: Value) -> String {
    let (status, record) = post(app, &app.admin_token, &format!("/v1/{kind}"), fields).await;
    assert_eq!(status, 201, "{record}");
    record["id"].as_str().expect("id").to_owned()
}

/// sales > {emea, apac}; a director over sales, a manager of emea with two reps, a rep in
/// apac, and finance, support and auditor users.
async fn organisation(app: &TestApp) -> Org {
    let sales = team(app, "Sales", None).await;
    let emea = team(app, "EMEA", Some(&sales)).await;
    let apac = team(app, "APAC", Some(&sales)).await;
    let (_, director) = user(app, "director@example.com", "sales_director", Some(&sales)).await;
    let (_, manager) = user(app, "manager@example.com", "manager", Some(&emea)).await;
    let (rep_a_id, rep_a) = user(app, "a@example.com", "rep", Some(&emea)).await;
    let (rep_b_id, _) = user(app, "b@example.com", "rep", Some(&emea)).await;
    let (rep_c_id, _) = user(app, "c@example.com", "rep", Some(&apac)).await;
    let (_, finance) = user(app, "finance@example.com", "finance", None).await;
    let (_, support) = user(app, "support@example.com", "support_agent", None).await;
    let (_, auditor) = user(app, "audit@example.com", "auditor", None).await;
    let mut leads = BTreeMap::new();
    for (name, owner) in [("a", &rep_a_id), ("b", &rep_b_id), ("c", &rep_c_id)] {
        let id = create(
            app,
            "leads",
            json!({"first_name": "Lead", "last_name": name.to_uppercase(),
                   "email": format!("lead-{name}@example.org"), "owner_id": owner}),
        )
        .await;
        leads.insert(name, id);
    }
    Org {
        director,
        manager,
        rep_a,
        rep_a_id,
        rep_b_id,
        rep_c_id,
        finance,
        support,
        auditor,
        leads,
    }
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn each_role_reaches_only_its_rows_kinds_and_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = organisation(&app).await;
    let (lead_a, lead_b, lead_c) = (&org.leads["a"], &org.leads["b"], &org.leads["c"]);

    // Rows: a rep sees their own, a manager their team, a director the tree under them.
    let lead = |id: &str| format!("/v1/leads/{id}");
    assert_eq!(get(&app, &org.rep_a, &lead(lead_a)).await.0, 200);
    let (status, hidden) = get(&app, &org.rep_a, &lead(lead_b)).await;
    assert_eq!(
        status, 404,
        "another rep's lead does not exist for this rep"
    );
    assert_eq!(
        get(&app, &org.rep_a, &lead("no-such-lead")).await.1["type"],
        hidden["type"]
    );
    let mut expected = vec![lead_a.clone()];
    assert_eq!(ids(&get(&app, &org.rep_a, "/v1/leads").await.1), expected);
    expected.push(lead_b.clone());
    expected.sort();
    assert_eq!(ids(&get(&app, &org.manager, "/v1/leads").await.1), expected);
    assert_eq!(get(&app, &org.manager, &lead(lead_c)).await.0, 404);
    expected.push(lead_c.clone());
    expected.sort();
    assert_eq!(
        ids(&get(&app, &org.director, "/v1/leads").await.1),
        expected
    );
    assert_eq!(get(&app, &org.director, &lead(lead_c)).await.0, 200);
    // Timelines follow the record.
    assert_eq!(
        get(&app, &org.rep_a, &format!("{}/timeline", lead(lead_a)))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&app, &org.rep_a, &format!("{}/timeline", lead(lead_b)))
            .await
            .0,
        404
    );

    // Fields: annual revenue is hidden from reps, everywhere, and cannot be probed.
    let account = create(
        &app,
        "accounts",
        json!({"name": "Initech", "annual_revenue": "12000000", "owner_id": org.rep_a_id}),
    )
    .await;
    let (status, seen) = get(&app, &org.rep_a, &format!("/v1/accounts/{account}")).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen["fields"].get("annual_revenue").is_none(), "{seen}");
    assert_eq!(seen["fields"]["name"], "Initech");
    let (_, listed) = get(&app, &org.rep_a, "/v1/accounts").await;
    assert!(listed["items"][0]["fields"].get("annual_revenue").is_none());
    assert_eq!(
        get(&app, &org.rep_a, "/v1/accounts?annual_revenue=12000000")
            .await
            .0,
        403
    );
    assert_eq!(
        get(&app, &org.rep_a, "/v1/accounts?sort=-annual_revenue")
            .await
            .0,
        403
    );
    let (_, seen) = get(&app, &org.manager, &format!("/v1/accounts/{account}")).await;
    assert_eq!(seen["fields"]["annual_revenue"], "12000000");

    // Kinds: finance reads invoices, not leads; support reads tickets, not opportunities.
    // Invoices are numbered by the billing operation, which answers {invoice, lines}.
    let (status, created) = post(
        &app,
        &app.admin_token,
        "/v1/invoices",
        json!({"currency": "EUR", "lines": [{"quantity": "1", "unit_price": "1"}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let invoice = created["invoice"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(&app, &org.finance, &format!("/v1/invoices/{invoice}"))
            .await
            .0,
        200
    );
    assert_eq!(get(&app, &org.finance, &lead(lead_a)).await.0, 403);
    assert_eq!(
        patch(&app, &org.finance, &lead(lead_a), json!({"company": "X"}))
            .await
            .0,
        403
    );
    let ticket = create(
        &app,
        "tickets",
        json!({"subject": "Broken", "status": "new"}),
    )
    .await;
    let opportunity = create(
        &app,
        "opportunities",
        json!({"name": "Deal", "owner_id": org.rep_a_id}),
    )
    .await;
    assert_eq!(
        get(&app, &org.support, &format!("/v1/tickets/{ticket}"))
            .await
            .0,
        200
    );
    assert_eq!(
        get(
            &app,
            &org.support,
            &format!("/v1/opportunities/{opportunity}")
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(&app, &org.rep_a, &format!("/v1/invoices/{invoice}"))
            .await
            .0,
        403
    );

    // Writes: reps create (and own) leads, may not delete; a director may.
    let (status, created) = post(
        &app,
        &org.rep_a,
        "/v1/leads",
        json!({"email": "new@example.org"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["fields"]["owner_id"], org.rep_a_id.as_str());
    let (status, _) = post(
        &app,
        &org.rep_a,
        "/v1/leads",
        json!({"email": "x@example.org", "owner_id": org.rep_c_id}),
    )
    .await;
    assert_eq!(
        status, 403,
        "a rep cannot give a lead to someone outside their reach"
    );
    let delete = |token: &str, id: &str| {
        let (token, path) = (token.to_owned(), lead(id));
        let app = &app;
        async move {
            send(app, reqwest::Method::DELETE, &token, &path, None)
                .await
                .0
        }
    };
    assert_eq!(delete(&org.rep_a, lead_a).await, 403);
    assert_eq!(delete(&org.director, lead_b).await, 204);
    assert_eq!(get(&app, &org.director, &lead(lead_b)).await.0, 404);

    // Export: CSV for roles with export, without hidden fields.
    assert_eq!(get(&app, &org.rep_a, "/v1/leads?format=csv").await.0, 403);
    let (status, csv) = get(&app, &org.director, "/v1/accounts?format=csv").await;
    assert_eq!(status, 200);
    assert!(csv.as_str().expect("csv text").contains("Initech"));

    // The audit trail: admins and auditors only.
    assert_eq!(get(&app, &org.rep_a, "/v1/audit").await.0, 403);
    assert_eq!(
        get(&app, &org.rep_a, &format!("{}/audit", lead(lead_a)))
            .await
            .0,
        403
    );
    let (status, trail) = get(&app, &org.auditor, &format!("{}/audit", lead(lead_a))).await;
    assert_eq!(status, 200, "{trail}");
    assert_eq!(trail["items"][0]["action"], "insert");
    assert_eq!(
        get(&app, &org.auditor, "/v1/audit?action=denied").await.0,
        200
    );

    // Every refusal above is on the chain, with who was refused.
    let (_, denials) = get(&app, &app.admin_token, "/v1/audit?action=denied&limit=1000").await;
    let denied_actors: Vec<&str> = denials["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(denied_actors.contains(&format!("user:{}", org.rep_a_id).as_str()));
    assert!(denials["items"][0]["user_agent"] == "access-test/1.0");
    let _ = org.rep_b_id;
    app.stop().await;
}

async fn writes_to_refused_fields_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = organisation(&app).await;
    let path = format!("/v1/leads/{}", org.leads["a"]);
    let (status, problem) = patch(
        &app,
        &org.rep_a,
        &path,
        json!({"company": "Allowed Ltd", "score": 99}),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("leads.score"),
        "{problem}"
    );
    let (_, lead) = get(&app, &org.rep_a, &path).await;
    assert!(
        lead["fields"]["company"].is_null(),
        "nothing written: {lead}"
    );
    assert_eq!(lead["version"], 1);
    let (status, _) = patch(&app, &org.rep_a, &path, json!({"company": "Allowed Ltd"})).await;
    assert_eq!(status, 200);

    let account = create(
        &app,
        "accounts",
        json!({"name": "Hooli", "owner_id": org.rep_a_id}),
    )
    .await;
    let (status, problem) = patch(
        &app,
        &org.rep_a,
        &format!("/v1/accounts/{account}"),
        json!({"name": "Hooli XYZ", "annual_revenue": "1"}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("annual_revenue")
    );
    let (_, seen) = get(&app, &app.admin_token, &format!("/v1/accounts/{account}")).await;
    assert_eq!(seen["fields"]["name"], "Hooli");
    assert!(seen["fields"]["annual_revenue"].is_null());
    app.stop().await;
}

async fn audit_rows_carry_who_where_and_a_tampered_row_breaks_the_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = organisation(&app).await;
    let path = format!("/v1/leads/{}", org.leads["a"]);
    let (status, _) = patch(&app, &org.rep_a, &path, json!({"company": "Globex"})).await;
    assert_eq!(status, 200);
    let (_, trail) = get(&app, &app.admin_token, &format!("{path}/audit")).await;
    let edit = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["field"] == "company")
        .expect("the edit is audited")
        .clone();
    assert_eq!(edit["actor"], format!("user:{}", org.rep_a_id));
    assert_eq!(edit["new_value"], "Globex");
    assert_eq!(edit["ip"], "127.0.0.1");
    assert_eq!(edit["user_agent"], "access-test/1.0");
    assert!(edit["request_id"].is_string());

    // The whole trail as CSV, filtered by actor.
    let actor = format!("user:{}", org.rep_a_id);
    let (status, csv) = get(
        &app,
        &app.admin_token,
        &format!("/v1/audit?actor={actor}&format=csv"),
    )
    .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().expect("csv text");
    assert!(csv.starts_with("seq,at,actor,"), "{csv}");
    assert!(csv.contains("Globex"));

    let report = app.store.verify_audit().await.expect("verify");
    assert!(report.broken.is_none(), "{report:?}");
    assert!(report.rows > 10);

    // No code path edits audit rows, and the store refuses it too.
    let seq = edit["seq"].as_i64().expect("seq");
    let tamper = "UPDATE audit_log SET new_value = '\"Initech\"' WHERE seq = $1";
    assert!(
        sqlx::query(tamper)
            .bind(seq)
            .execute(app.store.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM audit_log WHERE seq = $1")
            .bind(seq)
            .execute(app.store.pool())
            .await
            .is_err()
    );
    // Someone with the database's own rights drops the guard and edits a row.
    let drop_guard = match backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_update",
        Backend::Postgres => "DROP TRIGGER audit_log_append_only ON audit_log",
    };
    sqlx::query(drop_guard)
        .execute(app.store.pool())
        .await
        .expect("drop guard");
    sqlx::query(tamper)
        .bind(seq)
        .execute(app.store.pool())
        .await
        .expect("tamper");
    let report = app.store.verify_audit().await.expect("verify");
    let broken = report.broken.expect("tampering is detected");
    assert_eq!(broken.seq, seq, "the edited row is named");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_issues_a_session_and_records_failures() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, _) = post(
        &app,
        &app.admin_token,
        "/v1/admin/users",
        json!({
        "email": "Rep@Example.com", "role": "rep", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &app,
        "",
        "/v1/auth/sign-in",
        json!({"email": "rep@example.com", "password": "wrong password!!"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &app,
        "",
        "/v1/auth/sign-in",
        json!({"email": "nobody@example.com", "password": "wrong password!!"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, session) = post(
        &app,
        "",
        "/v1/auth/sign-in",
        json!({"email": "rep@example.com", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let token = session["token"].as_str().expect("token");
    let (status, me) = get(&app, token, "/v1/auth/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["role"], "rep");
    assert_eq!(me["hidden"]["accounts"], json!(["annual_revenue"]));
    let (_, failures) = get(&app, &app.admin_token, "/v1/audit?action=sign_in_failed").await;
    assert_eq!(failures["items"].as_array().expect("items").len(), 2);
    assert_eq!(failures["items"][0]["user_agent"], "access-test/1.0");
    let (_, successes) = get(&app, &app.admin_token, "/v1/audit?action=sign_in").await;
    assert_eq!(successes["items"].as_array().expect("items").len(), 1);
    // Signing out revokes the session token at once.
    let (status, _) = post(&app, token, "/v1/auth/sign-out", json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(get(&app, token, "/v1/auth/me").await.0, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_and_orphaned_tokens_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (user_id, token) = user(&app, "rep@example.com", "rep", None).await;
    assert_eq!(get(&app, &token, "/v1/auth/me").await.0, 200);
    // A deleted user's tokens stop working.
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        &app.admin_token,
        &format!("/v1/admin/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(get(&app, &token, "/v1/auth/me").await.0, 401);
    // A revoked token.
    let (user_id, token) = user(&app, "rep2@example.com", "rep", None).await;
    let (_, issued) = post(
        &app,
        &app.admin_token,
        &format!("/v1/admin/users/{user_id}/tokens"),
        json!({"name": "second"}),
    )
    .await;
    let second = issued["token"].as_str().expect("token");
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &app.admin_token,
            &format!("/v1/admin/tokens/{}", issued["id"].as_str().expect("id")),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(get(&app, second, "/v1/auth/me").await.0, 401);
    assert_eq!(
        get(&app, &token, "/v1/auth/me").await.0,
        200,
        "the other token still works"
    );
    // An expired token.
    let ctx = leadgate::store::WriteContext::new("test", "test", Default::default());
    let expired = app
        .store
        .create_token(
            &ctx,
            "old",
            &format!("user:{user_id}"),
            "rep",
            Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .await
        .expect("token");
    assert_eq!(get(&app, &expired.secret, "/v1/auth/me").await.0, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_move_that_closes_a_cycle_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let sales = team(&app, "Sales", None).await;
    let emea = team(&app, "EMEA", Some(&sales)).await;
    let uk = team(&app, "UK", Some(&emea)).await;
    let (status, problem) = patch(
        &app,
        &app.admin_token,
        &format!("/v1/admin/teams/{sales}"),
        json!({"parent_id": uk}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("cycle"),
        "{problem}"
    );
    let (_, teams) = get(&app, &app.admin_token, "/v1/admin/teams").await;
    let sales_row = teams["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["id"] == sales.as_str())
        .expect("sales")
        .clone();
    assert!(sales_row["parent_id"].is_null(), "nothing written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_answers_leave_out_fields_the_role_does_not_see() {
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        let analyst: RoleSection = toml::from_str(
            "reach = \"all\"\ncan = { audit = [\"read\"], accounts = [\"read\"] }\n\
             hidden = { accounts = [\"annual_revenue\"] }",
        )
        .expect("role");
        config.access.roles.insert("analyst".into(), analyst);
    })
    .await;
    let (_, analyst) = user(&app, "analyst@example.com", "analyst", None).await;
    let account = create(
        &app,
        "accounts",
        json!({"name": "Umbrella", "annual_revenue": "5"}),
    )
    .await;
    let (status, _) = patch(
        &app,
        &app.admin_token,
        &format!("/v1/accounts/{account}"),
        json!({"annual_revenue": "6", "industry": "pharma"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, trail) = get(&app, &analyst, &format!("/v1/accounts/{account}/audit")).await;
    assert_eq!(status, 200);
    let text = trail.to_string();
    assert!(!text.contains("annual_revenue"), "{text}");
    assert!(
        text.contains("pharma") && text.contains("Umbrella"),
        "{text}"
    );
    let (_, all) = get(&app, &analyst, "/v1/audit?kind=accounts").await;
    assert!(!all.to_string().contains("annual_revenue"));
    app.stop().await;
}

#[test]
fn a_role_naming_an_unknown_field_fails_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("leadgate.toml");
    std::fs::write(
        &file,
        "[access.roles.intern]\nhidden = { leads = [\"shoe_size\"] }\n",
    )
    .expect("write");
    let error = leadgate::config::Config::load(Some(&file)).expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("access.roles.intern: hidden.leads: unknown field `shoe_size`"),
        "{error}"
    );
}

async fn wait_for_leads(app: &TestApp, query: &str, count: usize) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, list) = get(app, &app.admin_token, &format!("/v1/leads?{query}")).await;
        if list["items"]
            .as_array()
            .is_some_and(|items| items.len() >= count)
        {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lead for {query}: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn trail(app: &TestApp, lead: &Value) -> Vec<Value> {
    let path = format!("/v1/leads/{}/audit", lead["id"].as_str().expect("id"));
    let (_, trail) = get(app, &app.admin_token, &path).await;
    trail["items"].as_array().expect("items").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_submissions_merges_and_imports_are_audited_with_their_origin() {
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        config
            .forms
            .insert("contact".into(), leadgate::config::FormSection::default());
    })
    .await;
    let form = |email: &'static str, company: &'static str| {
        app.client
            .post(format!("{}/v1/forms/contact", app.base))
            .header("user-agent", "Mozilla/5.0 (form test)")
            .form(&[
                ("email", email),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("company", company),
            ])
            .send()
    };
    assert!(
        form("ada@example.org", "")
            .await
            .expect("sent")
            .status()
            .is_success()
    );
    let list = wait_for_leads(&app, "email=ada@example.org", 1).await;
    let lead = &list["items"][0];
    let rows = trail(&app, lead).await;
    let insert = rows
        .iter()
        .find(|r| r["action"] == "insert")
        .expect("insert row");
    assert!(
        insert["actor"].as_str().expect("actor").starts_with("form"),
        "{insert}"
    );
    assert_eq!(insert["ip"], "127.0.0.1");
    assert_eq!(insert["user_agent"], "Mozilla/5.0 (form test)");

    // The same person again, with a company: the pipeline merges, audited as a merge.
    assert!(
        form("ada@example.org", "Analytical Engines")
            .await
            .expect("sent")
            .status()
            .is_success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let merge = loop {
        let rows = trail(&app, lead).await;
        if let Some(row) = rows
            .iter()
            .find(|r| r["action"] == "merge" && r["field"] == "company")
        {
            break row.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no merge row: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(merge["new_value"], "Analytical Engines");
    assert_eq!(merge["user_agent"], "Mozilla/5.0 (form test)");

    // An import: rows arrive through the import channel with the uploader's address.
    let csv = "email,first_name,last_name\ngrace@example.org,Grace,Hopper\n";
    let part = reqwest::multipart::Part::bytes(csv.as_bytes().to_vec()).file_name("people.csv");
    let response = app
        .client
        .post(format!("{}/v1/imports", app.base))
        .bearer_auth(&app.admin_token)
        .header("user-agent", "import-test/2.0")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 202);
    let list = wait_for_leads(&app, "email=grace@example.org", 1).await;
    let rows = trail(&app, &list["items"][0]).await;
    let insert = rows
        .iter()
        .find(|r| r["action"] == "insert")
        .expect("insert row");
    assert_eq!(insert["channel"], "import", "{insert}");
    assert_eq!(insert["user_agent"], "import-test/2.0");
    assert_eq!(insert["ip"], "127.0.0.1");
    assert!(
        app.store
            .verify_audit()
            .await
            .expect("verify")
            .broken
            .is_none()
    );
    app.stop().await;
}

async fn concurrent_writers_keep_one_unbroken_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let writers = (0..8).map(|writer| {
        let store = app.store.clone();
        tokio::spawn(async move {
            let ctx = leadgate::store::WriteContext::new(
                format!("user:w{writer}"),
                "api",
                Default::default(),
            );
            for n in 0..15 {
                let Value::Object(fields) =
                    json!({"email": format!("w{writer}-{n}@example.org"), "company": "Chain"})
                else {
                    unreachable!()
                };
                store
                    .write(
                        &ctx,
                        vec![leadgate::store::Change::Insert {
                            kind: leadgate::domain::RecordKind::Lead,
                            id: None,
                            fields,
                        }],
                    )
                    .await
                    .expect("write");
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("writer");
    }
    let report = app.store.verify_audit().await.expect("verify");
    assert!(report.broken.is_none(), "{report:?}");
    assert!(report.rows >= 120, "{report:?}");
    // The server's indexer ran beside the writers: once it has caught up, every row is in
    // both lookups exactly once (a row committed below the mark after it moved would be
    // in neither lookup table, and found only while the log's tail still reaches it).
    app.store.index_audit().await.expect("index");
    let pool = app.store.pool();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .expect("count")
    };
    let logged = count("SELECT COUNT(*) FROM audit_log").await;
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_record_index").await,
        logged
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_actor_index").await,
        logged
    );
    for writer in 0..8 {
        let rows = app
            .store
            .audit_search(&leadgate::store::audit::AuditFilter {
                actor: Some(format!("user:w{writer}")),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("search");
        assert_eq!(rows.len(), 15, "writer {writer}");
    }
    app.stop().await;
}

/// The write path appends audit rows without their lookups (migration 0015); lookups by
/// record and by actor read the lookup tables up to the indexed mark and the log above it,
/// in `seq` order, paging across the mark.
async fn audit_lookups_find_rows_on_both_sides_of_the_indexed_mark(backend: Backend) {
    use leadgate::domain::RecordKind;
    use leadgate::store::audit::AuditFilter;
    use leadgate::store::{Change, Store, WriteContext};
    let data = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/lookups.db?mode=rwc", data.path().display()),
        Backend::Postgres => common::fresh_postgres_url().await,
    };
    let store = Store::connect(&url, 2).await.expect("connect");
    store.migrate().await.expect("migrate");
    let (alice, bob) = (
        WriteContext::new("user:alice", "api", Default::default()),
        WriteContext::new("user:bob", "api", Default::default()),
    );
    let insert = |id: &str| Change::Insert {
        kind: RecordKind::Lead,
        id: Some(id.to_owned()),
        fields: serde_json::Map::from_iter([("email".to_owned(), json!(format!("{id}@x.org")))]),
    };
    let update = |id: &str, title: &str| Change::Update {
        kind: RecordKind::Lead,
        id: id.to_owned(),
        fields: serde_json::Map::from_iter([("title".to_owned(), json!(title))]),
        expected_version: None,
    };
    store
        .write(&alice, vec![insert("lead-a"), insert("lead-b")])
        .await
        .expect("insert");
    store
        .write(&bob, vec![update("lead-a", "CTO")])
        .await
        .expect("update");
    let trail = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .audit_of(RecordKind::Lead, id, 100)
                .await
                .expect("trail")
                .into_iter()
                .map(|entry| (entry.actor, entry.action))
                .collect::<Vec<_>>()
        }
    };
    let pair = |actor: &str, action: &str| (actor.to_owned(), action.to_owned());
    // Nothing indexed yet: found in the log's tail.
    assert_eq!(
        trail("lead-a").await,
        [pair("user:alice", "insert"), pair("user:bob", "update")]
    );
    assert_eq!(store.index_audit().await.expect("index"), 3);
    assert_eq!(store.index_audit().await.expect("index"), 0);
    store
        .write(&alice, vec![update("lead-a", "CEO")])
        .await
        .expect("update");
    // Two rows from the lookup table, one from the tail, in order.
    assert_eq!(
        trail("lead-a").await,
        [
            pair("user:alice", "insert"),
            pair("user:bob", "update"),
            pair("user:alice", "update")
        ]
    );
    assert_eq!(trail("lead-b").await, [pair("user:alice", "insert")]);
    // Alice's rows a page of one at a time, across the mark, as the API's cursor pages.
    let mut pages = Vec::new();
    let mut after_seq = None;
    loop {
        let page = store
            .audit_search(&AuditFilter {
                actor: Some("user:alice".into()),
                after_seq,
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("page");
        let Some(entry) = page.first() else { break };
        after_seq = Some(entry.seq);
        pages.push((entry.record_id.clone(), entry.action.clone()));
    }
    assert_eq!(
        pages,
        [
            ("lead-a".to_owned(), "insert".to_owned()),
            ("lead-b".to_owned(), "insert".to_owned()),
            ("lead-a".to_owned(), "update".to_owned())
        ]
    );
    // An actor lookup still applies the other filters, on both sides of the mark.
    let alice_on_a = store
        .audit_search(&AuditFilter {
            actor: Some("user:alice".into()),
            kind: Some("leads".into()),
            record_id: Some("lead-a".into()),
            action: Some("update".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("search");
    assert_eq!(alice_on_a.len(), 1);
    let b_by_record = store
        .audit_search(&AuditFilter {
            kind: Some("leads".into()),
            record_id: Some("lead-b".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("search");
    assert_eq!(b_by_record.len(), 1);
    assert_eq!(store.index_audit().await.expect("index"), 1);
    assert_eq!(trail("lead-a").await.len(), 3);
    store.close().await;
}

async fn a_team_list_merges_its_owners_in_order_and_pages(backend: Backend) {
    use leadgate::domain::RecordKind;
    use leadgate::store::read::ListQuery;
    let app = spawn_app(backend).await;
    let ctx = leadgate::store::WriteContext::new("test", "test", Default::default());
    let changes = (0..30)
        .map(|n| {
            let Value::Object(fields) = json!({
                "last_name": format!("Name{:02}", (n * 7) % 30),
                "status": if n % 2 == 0 { "new" } else { "working" },
                "owner_id": format!("u{}", n % 3),
            }) else {
                unreachable!()
            };
            leadgate::store::Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields,
            }
        })
        .collect();
    app.store.write(&ctx, changes).await.expect("insert");
    let status = RecordKind::Lead.field("status").expect("status");
    let query = |owners: Option<Vec<String>>, offset| ListQuery {
        filters: vec![(status, "new".to_owned())],
        owners,
        sort: "last_name",
        descending: false,
        limit: 4,
        offset,
    };
    let names = |records: Vec<leadgate::store::read::Record>| -> Vec<String> {
        records
            .iter()
            .map(|r| r.fields["last_name"].as_str().expect("name").to_owned())
            .collect()
    };
    let team = Some(vec!["u0".to_owned(), "u2".to_owned()]);
    // What the team sees is what everyone's list holds for those owners, in the same order.
    let all = app
        .store
        .list(
            RecordKind::Lead,
            &ListQuery {
                limit: 100,
                ..query(None, 0)
            },
        )
        .await
        .expect("list");
    let expected: Vec<String> = all
        .into_iter()
        .filter(|r| matches!(r.fields["owner_id"].as_str(), Some("u0" | "u2")))
        .map(|r| r.fields["last_name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(expected.len(), 10);
    let first = names(
        app.store
            .list(RecordKind::Lead, &query(team.clone(), 0))
            .await
            .expect("page"),
    );
    let second = names(
        app.store
            .list(RecordKind::Lead, &query(team.clone(), 4))
            .await
            .expect("page"),
    );
    assert_eq!(first, expected[..4]);
    assert_eq!(second, expected[4..8]);
    // The default order, newest first; one write gave all rows the same time, so the
    // merge must follow the id too.
    let newest = |owners: Option<Vec<String>>, offset| ListQuery {
        sort: "updated_at",
        descending: true,
        ..query(owners, offset)
    };
    let ids = |records: Vec<leadgate::store::read::Record>| -> Vec<String> {
        records.into_iter().map(|r| r.id).collect()
    };
    let expected: Vec<String> = app
        .store
        .list(
            RecordKind::Lead,
            &ListQuery {
                limit: 100,
                ..newest(None, 0)
            },
        )
        .await
        .expect("list")
        .into_iter()
        .filter(|r| matches!(r.fields["owner_id"].as_str(), Some("u0" | "u2")))
        .map(|r| r.id)
        .collect();
    let mut team_pages = Vec::new();
    for offset in [0, 4, 8] {
        team_pages.extend(ids(app
            .store
            .list(RecordKind::Lead, &newest(team.clone(), offset))
            .await
            .expect("page")));
    }
    assert_eq!(team_pages, expected);
    app.stop().await;
}

/// Migration 0013 stores hashes as bytes and drops `prev_hash`: a chain written before it,
/// as hex text, must still verify, take new rows, and show tampering.
async fn a_chain_kept_as_hex_text_still_verifies_once_stored_as_bytes(backend: Backend) {
    use leadgate::store::audit::{AuditContent, GENESIS};
    use sqlx::migrate::Migrator;
    let data = tempfile::tempdir().expect("temp dir");
    let (url, dir) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}/old.db?mode=rwc", data.path().display()),
            "migrations/sqlite",
        ),
        Backend::Postgres => (common::fresh_postgres_url().await, "migrations/postgres"),
    };
    let store = leadgate::store::Store::connect(&url, 2)
        .await
        .expect("connect");
    let mut before = Migrator::new(std::path::Path::new(dir))
        .await
        .expect("migrations");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 13)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(store.pool()).await.expect("migrate to 0012");
    let mut prev = GENESIS.to_vec();
    let mut seqs = Vec::new();
    for n in 0..3 {
        let id = format!("l-{n}");
        let content = AuditContent {
            at: "2026-11-24T10:00:00.000000Z",
            actor: "user:a",
            channel: "api",
            action: "update",
            record_kind: "leads",
            record_id: &id,
            field: Some("email"),
            old_value: None,
            new_value: Some("\"x@example.org\""),
            ip: Some("10.0.0.1"),
            user_agent: None,
            request_id: None,
        };
        let hash = content.hash(&prev);
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, channel, action, record_kind, record_id, field, \
             old_value, new_value, ip, user_agent, request_id, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING seq",
        )
        .bind(content.at)
        .bind(content.actor)
        .bind(content.channel)
        .bind(content.action)
        .bind(content.record_kind)
        .bind(content.record_id)
        .bind(content.field)
        .bind(None::<String>)
        .bind(content.new_value)
        .bind(content.ip)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(hex::encode(&prev))
        .bind(hex::encode(hash))
        .fetch_one(store.pool())
        .await
        .expect("old row");
        seqs.push(seq);
        prev = hash.to_vec();
    }
    store.migrate().await.expect("migrate to the latest");
    let report = store.verify_audit().await.expect("verify");
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.rows, 3);
    // Migration 0015 put the rows there were into the lookups.
    assert_eq!(store.index_audit().await.expect("index"), 0);
    let trail = store
        .audit_of(leadgate::domain::RecordKind::Lead, "l-1", 10)
        .await
        .expect("trail");
    assert_eq!(trail.len(), 1);
    assert_eq!(report.head, hex::encode(&prev));
    // New rows link onto the migrated chain.
    let ctx = leadgate::store::WriteContext::new("user:a", "api", Default::default());
    store
        .record_event(&ctx, "sign_in", "users", "a", None, None)
        .await
        .expect("event");
    let report = store.verify_audit().await.expect("verify");
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.rows, 4);
    // An edited migrated row is still named, and so is the row after a removed one.
    let drop_guard = match backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_delete",
        Backend::Postgres => "DROP TRIGGER audit_log_append_only ON audit_log",
    };
    sqlx::query(drop_guard)
        .execute(store.pool())
        .await
        .expect("drop guard");
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(seqs[1])
        .execute(store.pool())
        .await
        .expect("remove a row");
    let broken = store
        .verify_audit()
        .await
        .expect("verify")
        .broken
        .expect("a removed row is detected");
    assert_eq!(broken.seq, seqs[2]);
    if backend == Backend::Sqlite {
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(store.pool())
            .await
            .expect("drop guard");
    }
    sqlx::query("UPDATE audit_log SET ip = '10.0.0.2' WHERE seq = $1")
        .bind(seqs[0])
        .execute(store.pool())
        .await
        .expect("edit a row");
    let broken = store
        .verify_audit()
        .await
        .expect("verify")
        .broken
        .expect("an edited row is detected");
    assert_eq!(broken.seq, seqs[0]);
    store.close().await;
}

/// Lead search hits for `q` as `token`.
async fn search(app: &TestApp, token: &str, q: &str) -> (StatusCode, Value) {
    get(app, token, &format!("/v1/search?q={q}&kind=leads")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_shows_each_role_only_its_rows_and_fields() {
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        let blind: RoleSection = toml::from_str(
            "reach = \"all\"\ncan = { leads = [\"read\"] }\nhidden = { leads = [\"company\"] }",
        )
        .expect("role");
        config.access.roles.insert("blind".into(), blind);
    })
    .await;
    let org = organisation(&app).await;
    let (_, blind) = user(&app, "blind@example.com", "blind", None).await;
    for (name, owner) in [("Quimby", &org.rep_a_id), ("Quinlan", &org.rep_c_id)] {
        create(
            &app,
            "leads",
            json!({"first_name": "Mara", "last_name": name, "company": "Quantumworks",
                   "owner_id": owner}),
        )
        .await;
    }
    // Wait until the index holds both for someone who sees everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, all) = search(&app, &app.admin_token, "quantumworks").await;
        if all["hits"].as_array().is_some_and(|h| h.len() == 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index never caught up: {all}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A rep finds their own lead only, with a typo too.
    let (status, mine) = search(&app, &org.rep_a, "quantumwroks").await;
    assert_eq!(status, 200, "{mine}");
    let hits = mine["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 1, "{mine}");
    assert_eq!(hits[0]["fields"]["last_name"], "Quimby");
    // A role that does not see `company` cannot find a lead by it, nor see it in a hit.
    let (_, by_company) = search(&app, &blind, "quantumworks").await;
    assert_eq!(
        by_company["hits"].as_array().expect("hits").len(),
        0,
        "{by_company}"
    );
    let (_, by_name) = search(&app, &blind, "quinlan").await;
    let text = by_name.to_string();
    assert_eq!(
        by_name["hits"].as_array().expect("hits").len(),
        1,
        "{by_name}"
    );
    assert!(
        !text.contains("Quantumworks") && !text.contains("company"),
        "{text}"
    );
    // A role that reads no searchable kind is refused.
    assert_eq!(search(&app, &org.auditor, "quinlan").await.0, 403);
    // Finance reads no leads: a search for leads finds nothing for it.
    let (_, none) = search(&app, &org.finance, "quinlan").await;
    assert_eq!(none["hits"].as_array().map_or(0, Vec::len), 0, "{none}");
    app.stop().await;
}
