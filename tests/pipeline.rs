//! The pipeline end to end: mapping, normalisation, dedup (merge, review, new), the review
//! queue, and the dedup harness on a slice of the Febrl benchmark.

mod common;

use common::{Backend, spawn_app};
use serde_json::{Value, json};

on_both_backends!(
    the_same_person_twice_becomes_one_lead_with_both_arrivals_on_its_timeline,
    values_are_normalised_and_unfit_values_kept_and_flagged,
    a_review_pair_is_decided_once,
    leads_are_enriched_and_linked_to_their_account_by_domain,
    leads_are_assigned_round_robin_within_capacity_by_the_first_rule_that_holds,
    merges_are_undone_from_the_audit_trail,
    a_trusted_source_and_a_persons_edit_survive_later_arrivals,
    dedup_follows_merges_and_deletes_made_after_it_remembered_the_members,
);

async fn merges_are_undone_from_the_audit_trail(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let unmerge = |id: String, body: Value| {
        app.client
            .post(format!("{}/v1/leads/{id}/unmerge", app.base))
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
    };
    // An arrival that merged automatically gets a lead of its own back.
    let first = submit(
        &app,
        &key,
        json!({"first_name": "Rosalind", "last_name": "Franklin",
        "email": "rosalind@kings.example", "phone": "+44 20 7946 0000"}),
    )
    .await;
    let second = submit(
        &app,
        &key,
        json!({"first_name": "Rosalind", "last_name": "Franklin",
        "email": "rosalind@kings.example", "company": "Birkbeck"}),
    )
    .await;
    assert_eq!(second["result"]["action"], "merged");
    let lead = first["result"]["id"].as_str().unwrap().to_owned();
    let response = unmerge(lead.clone(), json!({"inbound_id": second["id"]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let undone: Value = response.json().await.unwrap();
    assert!(
        undone["restored_fields"]
            .as_array()
            .unwrap()
            .contains(&json!("company"))
    );
    let (_, kept) = app.get_json(&format!("/v1/leads/{lead}")).await;
    assert_eq!(
        kept["fields"]["company"],
        Value::Null,
        "the merge's change is put back"
    );
    let own = undone["restored_id"].as_str().unwrap();
    let (_, split) = app.get_json(&format!("/v1/leads/{own}")).await;
    assert_eq!(split["fields"]["company"], "Birkbeck");
    let (_, timeline) = app.get_json(&format!("/v1/leads/{own}/timeline")).await;
    assert!(
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["fields"]["inbound_id"] == second["id"])
    );
    let again = unmerge(lead.clone(), json!({"inbound_id": second["id"]}))
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // A steward's merge of two stored leads is undone too.
    let a = submit(
        &app,
        &key,
        json!({"first_name": "Sam", "last_name": "Okafor", "email": "sam@okafor.example"}),
    )
    .await;
    let b = submit(
        &app,
        &key,
        json!({"first_name": "Sam", "last_name": "Okafor", "email": "sokafor@bello.example"}),
    )
    .await;
    merge_first_review_pair(&app).await;
    let (a_id, b_id) = (
        a["result"]["id"].as_str().unwrap().to_owned(),
        b["result"]["id"].as_str().unwrap().to_owned(),
    );
    let response = unmerge(a_id.clone(), json!({"merged_id": b_id}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, back) = app.get_json(&format!("/v1/leads/{b_id}")).await;
    assert_eq!(status, 200, "the merged lead is back under its own id");
    assert_eq!(back["fields"]["email"], "sokafor@bello.example");
    let (_, survivor) = app.get_json(&format!("/v1/leads/{a_id}")).await;
    assert_eq!(survivor["fields"]["email"], "sam@okafor.example");
    let (_, timeline) = app.get_json(&format!("/v1/leads/{b_id}/timeline")).await;
    assert!(
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["fields"]["activity_type"] == "inbound"),
        "its activities came back"
    );
    let ambiguous = unmerge(a_id.clone(), json!({})).await.unwrap();
    assert_eq!(ambiguous.status(), 400);
    let malformed = app
        .client
        .post(format!("{}/v1/leads/{a_id}/unmerge", app.base))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

async fn leads_are_assigned_round_robin_within_capacity_by_the_first_rule_that_holds(
    backend: Backend,
) {
    use leadgate::domain::RecordKind;
    use leadgate::pipeline::assign::AssignmentRule;
    use leadgate::store::{Change, RequestMeta, WriteContext};
    let data = tempfile::tempdir().unwrap();
    let mut config = common::test_config(backend, &data).await;
    let rule =
        |name: &str, country: &[&str], user: Option<&str>, team: Option<&str>| AssignmentRule {
            name: name.into(),
            country: country.iter().map(|c| c.to_string()).collect(),
            region: vec![],
            postcode_prefix: vec![],
            source: None,
            min_score: None,
            max_score: None,
            to_user: user.map(Into::into),
            to_team: team.map(Into::into),
        };
    config.assignment_rules = vec![
        rule("UK & Ireland", &["GB", "IE"], None, Some("emea")),
        rule("everyone else", &[], Some("u-catchall"), None),
    ];
    config.max_open_leads_per_user = 2;
    let app = common::spawn_app_with(config, data).await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    for user in ["u-anna", "u-ben"] {
        let Value::Object(fields) = json!({"email": format!("{user}@crm.example"), "name": user, "team_id": "emea", "active": true})
        else {
            unreachable!()
        };
        app.store
            .write(
                &ctx,
                vec![Change::Insert {
                    kind: RecordKind::User,
                    id: Some(user.into()),
                    fields,
                }],
            )
            .await
            .unwrap();
    }
    let key = app.partner_token("acme").await;
    let mut owners = Vec::new();
    for n in 0..5 {
        let row = submit(
            &app,
            &key,
            json!({"first_name": format!("Person{n}"), "last_name": format!("Surname{n}"),
            "email": format!("p{n}@mail{n}.example"), "country": "GB"}),
        )
        .await;
        let (_, lead) = app
            .get_json(&format!(
                "/v1/leads/{}",
                row["result"]["id"].as_str().unwrap()
            ))
            .await;
        owners.push(lead["fields"]["owner_id"].clone());
    }
    assert_eq!(
        owners[..4],
        [
            json!("u-anna"),
            json!("u-ben"),
            json!("u-anna"),
            json!("u-ben")
        ],
        "round robin"
    );
    assert_eq!(
        owners[4],
        json!("u-catchall"),
        "the team is at capacity: the next rule takes it"
    );
    let row = submit(&app, &key, json!({"first_name": "Ana", "last_name": "Silva", "email": "ana@silva.example", "country": "Portugal"})).await;
    let lead_id = row["result"]["id"].as_str().unwrap();
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let assignment = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fields"]["activity_type"] == "assignment")
        .expect("assignment on the timeline")
        .clone();
    assert_eq!(assignment["fields"]["data"]["rule"], "everyone else");
    assert_eq!(assignment["fields"]["owner_id"], "u-catchall");
    app.stop().await;
}

async fn leads_are_enriched_and_linked_to_their_account_by_domain(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let first = submit(&app, &key, json!({"first_name": "Ines", "last_name": "Duarte",
        "email": "ines@northwind-traders.example", "company": "Northwind Traders Ltd", "phone": "+33 1 44 55 66 77"})).await;
    let (_, lead) = app
        .get_json(&format!(
            "/v1/leads/{}",
            first["result"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lead["fields"]["email_type"], "corporate");
    assert_eq!(lead["fields"]["company_key"], "northwind traders");
    assert_eq!(lead["fields"]["country"], "FR", "from the phone");
    assert_eq!(lead["fields"]["time_zone"], "Europe/Paris");
    let account_id = lead["fields"]["account_id"]
        .as_str()
        .expect("linked")
        .to_owned();
    let (_, account) = app.get_json(&format!("/v1/accounts/{account_id}")).await;
    assert_eq!(account["fields"]["domain"], "northwind-traders.example");
    assert_eq!(account["fields"]["name"], "Northwind Traders Ltd");

    // The account gets an owner; the next lead from that domain keeps it.
    let response = app
        .client
        .patch(format!("{}/v1/accounts/{account_id}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"owner_id": "user-7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second = submit(&app, &key, json!({"first_name": "Tomas", "last_name": "Berg", "email": "tomas@northwind-traders.example"})).await;
    let (_, lead) = app
        .get_json(&format!(
            "/v1/leads/{}",
            second["result"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lead["fields"]["account_id"], account_id.as_str());
    assert_eq!(lead["fields"]["owner_id"], "user-7");
    assert_eq!(
        app.store
            .count(leadgate::domain::RecordKind::Account)
            .await
            .unwrap(),
        1
    );

    let personal = submit(
        &app,
        &key,
        json!({"first_name": "Li", "last_name": "Wei", "email": "li.wei@gmail.com"}),
    )
    .await;
    let (_, lead) = app
        .get_json(&format!(
            "/v1/leads/{}",
            personal["result"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lead["fields"]["email_type"], "free");
    assert_eq!(
        lead["fields"]["account_id"],
        Value::Null,
        "a free-mail domain is nobody's account"
    );
    app.stop().await;
}

/// A steward merges the first pair of the review queue.
async fn merge_first_review_pair(app: &common::TestApp) {
    let (_, queue) = app.get_json("/v1/review").await;
    let pair = queue["items"][0]["id"].as_str().unwrap().to_owned();
    let merged = app
        .client
        .post(format!("{}/v1/review/{pair}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"decision": "merge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(merged.status(), 200);
}

async fn submit(app: &common::TestApp, key: &str, lead: Value) -> Value {
    let receipt: Value = app
        .post_json(key, "/v1/partner/leads", &lead)
        .await
        .json()
        .await
        .unwrap();
    app.settled_inbound(receipt["id"].as_str().unwrap()).await
}

async fn the_same_person_twice_becomes_one_lead_with_both_arrivals_on_its_timeline(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let first = submit(
        &app,
        &key,
        json!({"first_name": "Margaret", "last_name": "Hamilton",
        "email": "margaret.hamilton@apollo.example", "phone": "020 7946 0958", "city": "Boston"}),
    )
    .await;
    assert_eq!(first["result"]["action"], "created", "{first}");
    let second = submit(&app, &key, json!({"first_name": "Margret", "last_name": "Hamilton",
        "email": "Margaret.Hamilton@Apollo.example", "phone": "+44 20 7946 0958", "company": "MIT Instrumentation Lab"})).await;
    assert_eq!(second["result"]["action"], "merged", "{second}");
    let lead_id = first["result"]["id"].as_str().unwrap();
    assert_eq!(second["result"]["id"], lead_id);

    let (_, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(
        lead["fields"]["company"], "MIT Instrumentation Lab",
        "newest non-empty wins"
    );
    assert_eq!(
        lead["fields"]["city"], "Boston",
        "an empty arrival keeps what was there"
    );
    assert_eq!(lead["fields"]["phone"], "+442079460958");
    // Fit: corporate email 10 + phone 5; the second arrival adds a company (5). Partner
    // arrivals score no behaviour.
    assert_eq!(lead["fields"]["score"], 20);
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let items = timeline["items"].as_array().unwrap();
    let inbound = items
        .iter()
        .filter(|a| a["fields"]["activity_type"] == "inbound")
        .count();
    assert_eq!(inbound, 2);
    let first_score: Vec<&Value> = items
        .iter()
        .filter_map(|a| a["fields"]["data"].get("score"))
        .collect();
    assert_eq!(
        first_score.len(),
        1,
        "the first arrival tells the first score"
    );
    assert_eq!(first_score[0]["to"], 15);
    assert_eq!(
        first_score[0]["rules"],
        json!(["corporate email", "reachable by phone"])
    );
    let changes: Vec<&Value> = items
        .iter()
        .filter(|a| a["fields"]["activity_type"] == "score_change")
        .collect();
    assert_eq!(changes.len(), 1, "then 15 → 20");
    let latest = changes[0];
    assert_eq!(latest["fields"]["data"]["to"], 20);
    assert_eq!(latest["fields"]["data"]["from"], 15);
    assert!(
        latest["fields"]["data"]["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("company named"))
    );
    let (_, audit) = app.get_json(&format!("/v1/leads/{lead_id}/audit")).await;
    let merges: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "merge")
        .collect();
    let company = merges
        .iter()
        .find(|e| e["field"] == "company")
        .expect("merge audited per field");
    assert_eq!(company["old_value"], Value::Null);
    assert_eq!(company["new_value"], "MIT Instrumentation Lab");
    assert_eq!(
        app.store
            .count(leadgate::domain::RecordKind::Lead)
            .await
            .unwrap(),
        1
    );
    app.stop().await;
}

async fn values_are_normalised_and_unfit_values_kept_and_flagged(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let row = submit(
        &app,
        &key,
        json!({"first_name": "  mr john ", "email": "JOHN@Example.ORG",
        "country": "United States", "phone": "not a phone", "consent_email": "maybe"}),
    )
    .await;
    let lead_id = row["result"]["id"].as_str().unwrap();
    let (_, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(lead["fields"]["first_name"], "John");
    assert_eq!(lead["fields"]["email"], "john@example.org");
    assert_eq!(lead["fields"]["country"], "US");
    assert_eq!(lead["fields"]["phone"], "not a phone", "kept raw");
    assert_eq!(
        lead["fields"]["custom"]["consent_email"], "maybe",
        "kept, not dropped"
    );
    let issues = lead["fields"]["custom"]["_issues"].as_array().unwrap();
    let flagged: Vec<&str> = issues
        .iter()
        .map(|i| i["field"].as_str().unwrap())
        .collect();
    assert!(
        flagged.contains(&"phone") && flagged.contains(&"consent_email"),
        "{flagged:?}"
    );
    app.stop().await;
}

async fn a_review_pair_is_decided_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    // The same name and different addresses: evidence enough to ask, not to merge.
    let a = submit(
        &app,
        &key,
        json!({"first_name": "Sam", "last_name": "Okafor", "email": "sam@okafor.example"}),
    )
    .await;
    let b = submit(
        &app,
        &key,
        json!({"first_name": "Sam", "last_name": "Okafor", "email": "sokafor@bello.example"}),
    )
    .await;
    assert_eq!(b["result"]["action"], "review", "{b}");
    let (_, queue) = app.get_json("/v1/review").await;
    let pair = &queue["items"][0];
    assert_eq!(pair["record_a"], a["result"]["id"]);
    assert_eq!(pair["b"]["fields"]["email"], "sokafor@bello.example");
    assert!(
        pair["breakdown"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["field"] == "email")
    );
    let decide = |id: String, decision: &'static str| {
        app.client
            .post(format!("{}/v1/review/{id}", app.base))
            .bearer_auth(&app.admin_token)
            .json(&json!({"decision": decision}))
            .send()
    };
    let id = pair["id"].as_str().unwrap().to_owned();
    let merged = decide(id.clone(), "merge").await.unwrap();
    assert_eq!(merged.status(), 200);
    let again = decide(id.clone(), "not_a_duplicate").await.unwrap();
    assert_eq!(
        again.status(),
        409,
        "a second steward is told it was resolved"
    );
    let survivor = a["result"]["id"].as_str().unwrap();
    let (_, lead) = app.get_json(&format!("/v1/leads/{survivor}")).await;
    assert_eq!(
        lead["fields"]["email"], "sokafor@bello.example",
        "the later arrival's value wins"
    );
    let (_, timeline) = app
        .get_json(&format!("/v1/leads/{survivor}/timeline"))
        .await;
    let inbound = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["fields"]["activity_type"] == "inbound")
        .count();
    assert_eq!(inbound, 2, "the merged lead's activities moved");
    let merged_away = b["result"]["id"].as_str().unwrap();
    let (status, _) = app.get_json(&format!("/v1/leads/{merged_away}")).await;
    assert_eq!(status, 404);
    let (_, trail) = app
        .get_json(&format!("/v1/leads/{merged_away}/audit"))
        .await;
    assert_eq!(
        trail["items"].as_array().unwrap().last().unwrap()["action"],
        "merged_into"
    );
    let (_, queue) = app.get_json("/v1/review").await;
    assert_eq!(queue["items"].as_array().unwrap().len(), 0);
    let missing = decide("no-such-pair".into(), "merge").await.unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

/// The worker has already taken both Okafor arrivals into its blocking memory when a
/// steward merges them and an admin later deletes the survivor: a later arrival must
/// merge into the survivor, not the lead merged away, and after the delete into nothing.
async fn dedup_follows_merges_and_deletes_made_after_it_remembered_the_members(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let sam = |email: &str| json!({"first_name": "Sam", "last_name": "Okafor", "email": email});
    let a = submit(&app, &key, sam("sam@okafor.example")).await;
    let b = submit(&app, &key, sam("sokafor@bello.example")).await;
    assert_eq!(b["result"]["action"], "review", "{b}");
    let (survivor, merged_away) = (
        a["result"]["id"].as_str().unwrap().to_owned(),
        b["result"]["id"].as_str().unwrap().to_owned(),
    );
    merge_first_review_pair(&app).await;

    // The best match is the member that arrived as the lead merged away.
    let again = submit(&app, &key, sam("sokafor@bello.example")).await;
    assert_eq!(again["result"]["action"], "merged", "{again}");
    assert_eq!(
        again["result"]["id"],
        survivor.as_str(),
        "not {merged_away}"
    );

    let deleted = app
        .client
        .delete(format!("{}/v1/leads/{survivor}", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let after = submit(&app, &key, sam("sokafor@bello.example")).await;
    assert_eq!(after["result"]["action"], "created", "{after}");
    app.stop().await;
}

/// The harness scores a 321-row slice of Febrl3 (fixtures/febrl3) against the labels in
/// its ids; a regression in mapping, normalisation or matching shows here.
#[test]
fn the_dedup_harness_finds_the_febrl_slice_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.csv");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/febrl3/febrl3_slice.csv"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "dedup",
            fixture,
            "--mapping",
            "febrl",
            "--id-column",
            "rec_id",
            "--pairs",
            pairs.to_str().unwrap(),
            "--mode",
            "batch",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entity = |id: &str| id.split('-').nth(1).unwrap().to_owned();
    let text = std::fs::read_to_string(&pairs).unwrap();
    let found: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let mut parts = line.split(',');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect();
    let true_positives = found.iter().filter(|(a, b)| entity(a) == entity(b)).count();
    let precision = true_positives as f64 / found.len() as f64;
    // Pairs in the slice: sum over entities of n*(n-1)/2.
    let ids: Vec<String> = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().trim().to_owned())
        .collect();
    let mut sizes = std::collections::HashMap::new();
    for id in &ids {
        *sizes.entry(entity(id)).or_insert(0usize) += 1;
    }
    let truth: usize = sizes.values().map(|n| n * (n - 1) / 2).sum();
    let recall = true_positives as f64 / truth as f64;
    assert!(precision >= 0.99, "precision {precision}");
    assert!(
        recall >= 0.90,
        "recall {recall} ({true_positives} of {truth})"
    );
}

on_both_backends!(behaviour_points_fade_by_the_day_and_fit_does_not);

async fn behaviour_points_fade_by_the_day_and_fit_does_not(backend: Backend) {
    use leadgate::domain::RecordKind;
    use leadgate::store::{Change, RequestMeta, WriteContext};
    let app = spawn_app(backend).await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let now = chrono::Utc::now();
    let three_days_ago = (now - chrono::Duration::days(3) - chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lead = |behaviour: i64| {
        let Value::Object(fields) = json!({"email": format!("b{behaviour}@decay.example"), "fit_score": 10,
            "behaviour_score": behaviour, "score": 10 + behaviour, "behaviour_decayed_at": three_days_ago})
        else {
            unreachable!()
        };
        Change::Insert {
            kind: RecordKind::Lead,
            id: Some(format!("lead-{behaviour}")),
            fields,
        }
    };
    app.store
        .write(&ctx, vec![lead(20), lead(4)])
        .await
        .unwrap();
    let changed = leadgate::pipeline::decay::decay_once(&app.store, 5, now)
        .await
        .unwrap();
    assert_eq!(changed, 2);
    let faded = app
        .store
        .get(RecordKind::Lead, "lead-20")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            faded.fields["behaviour_score"].clone(),
            faded.fields["score"].clone()
        ),
        (json!(5), json!(15))
    );
    let floored = app
        .store
        .get(RecordKind::Lead, "lead-4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(floored.fields["behaviour_score"], 0, "never below zero");
    assert_eq!(floored.fields["score"], 10, "fit stays");
    assert_eq!(
        leadgate::pipeline::decay::decay_once(&app.store, 5, now)
            .await
            .unwrap(),
        0,
        "not due again today"
    );
    let audit = app
        .store
        .audit_of(RecordKind::Lead, "lead-20", 10)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "pipeline:decay" && e.field.as_deref() == Some("score"))
    );
    app.stop().await;
}

async fn a_trusted_source_and_a_persons_edit_survive_later_arrivals(backend: Backend) {
    let app = common::spawn_app_with_config(backend, |config| {
        config.survivorship_priority = vec!["api".into(), "partner".into()];
        config
            .forms
            .insert("contact".into(), leadgate::config::FormSection::default());
    })
    .await;
    let key = app.partner_token("acme").await;
    let first = submit(
        &app,
        &key,
        json!({"first_name": "Hedy", "last_name": "Lamarr",
               "email": "hedy@example.org", "company": "Frequency Hopping Ltd"}),
    )
    .await;
    let lead_path = format!("/v1/leads/{}", first["result"]["id"].as_str().unwrap());
    let edit = app
        .client
        .patch(format!("{}{lead_path}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"title": "Inventor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), 200);
    // A web form (not in the priority list) says otherwise about both, and adds a city.
    let response = app
        .client
        .post(format!("{}/v1/forms/contact", app.base))
        .form(&[
            ("email", "hedy@example.org"),
            ("first_name", "Hedy"),
            ("last_name", "Lamarr"),
            ("company", "Hedy Corp"),
            ("title", "Actress"),
            ("city", "Vienna"),
        ])
        .send()
        .await
        .unwrap();
    let receipt: Value = response.json().await.unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    assert_eq!(row["result"]["action"], "merged", "{row}");
    let (_, lead) = app.get_json(&lead_path).await;
    assert_eq!(lead["fields"]["company"], "Frequency Hopping Ltd", "{lead}");
    assert_eq!(lead["fields"]["title"], "Inventor", "{lead}");
    assert_eq!(lead["fields"]["city"], "Vienna", "gaps still fill: {lead}");
    assert_eq!(lead["fields"]["field_sources"]["city"], "form");
    app.stop().await;
}
