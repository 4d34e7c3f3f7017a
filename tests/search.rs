//! Search: one contract suite run against each backend (the embedded tantivy index always,
//! Meilisearch when `LEADGATE_TEST_MEILI_URL` is set), and the real app end to end: leads
//! arriving through the partner API are found with typos and in any phone format, the
//! indexer follows the outbox after commit and catches up after a stop, `leadgate reindex`
//! rebuilds, a damaged or missing index directory is rebuilt from the store, and bad input
//! gets problem answers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestApp, spawn_app};
use leadgate::domain::RecordKind;
use leadgate::search::meili::MeiliIndex;
use leadgate::search::tantivy::TantivyIndex;
use leadgate::search::{IndexBatch, SearchDoc, SearchIndex, SearchQuery, SearchScope};
use leadgate::store::{Change, RequestMeta, Store, WriteContext};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// The contract every backend passes.
// ---------------------------------------------------------------------------------------

fn doc(kind: RecordKind, id: &str, updated_at: &str, fields: Value) -> SearchDoc {
    let Value::Object(fields) = fields else {
        panic!("fields are an object")
    };
    SearchDoc {
        kind,
        id: id.to_owned(),
        updated_at: updated_at.to_owned(),
        fields,
    }
}

fn fixtures() -> Vec<SearchDoc> {
    use RecordKind::*;
    vec![
        doc(
            Lead,
            "lead-ada",
            "2025-01-01T10:00:00.000000Z",
            json!({
            "first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@analytical.example",
            "phone": "+442079460958", "company": "Analytical Engines Ltd", "status": "new",
            "owner_id": "user-1", "title": "Mathematician"}),
        ),
        doc(
            Lead,
            "lead-grace-old",
            "2024-01-01T10:00:00.000000Z",
            json!({
            "first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example",
            "phone": "+14155550100", "status": "working", "owner_id": "user-2"}),
        ),
        doc(
            Lead,
            "lead-grace-new",
            "2025-06-01T10:00:00.000000Z",
            json!({
            "first_name": "Grace", "last_name": "Hopper", "email": "g.hopper@cobol.example",
            "status": "new", "owner_id": "user-2"}),
        ),
        doc(
            Lead,
            "lead-gracie",
            "2026-01-01T10:00:00.000000Z",
            json!({
            "first_name": "Gracie", "last_name": "Hoppers", "status": "new", "owner_id": "user-2"}),
        ),
        doc(
            Contact,
            "contact-alan",
            "2025-02-01T10:00:00.000000Z",
            json!({
            "first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example",
            "phone": "+441908640404", "mobile_phone": "+447700900123", "owner_id": "user-1"}),
        ),
        doc(
            Account,
            "account-bletchley",
            "2025-02-01T10:00:00.000000Z",
            json!({
            "name": "Bletchley Park Trust", "domain": "bletchley.example", "owner_id": "user-3"}),
        ),
        doc(
            Opportunity,
            "opp-engine",
            "2025-03-01T10:00:00.000000Z",
            json!({
            "name": "Difference Engine upgrade", "stage": "Proposal", "owner_id": "user-1"}),
        ),
        doc(
            Invoice,
            "inv-1",
            "2025-03-01T10:00:00.000000Z",
            json!({
            "number": "INV-2025-00042", "status": "open", "owner_id": "user-1"}),
        ),
        doc(
            Ticket,
            "ticket-1",
            "2025-03-01T10:00:00.000000Z",
            json!({
            "subject": "Printer <script> jammed", "status": "open", "owner_id": "user-3"}),
        ),
        doc(
            Renewal,
            "renewal-1",
            "2025-03-01T10:00:00.000000Z",
            json!({
            "contract_name": "Annual maintenance", "product": "Analytical Engine", "owner_id": "user-1"}),
        ),
    ]
}

fn query(q: &str) -> SearchQuery {
    SearchQuery::new(q)
}

async fn ids(index: &dyn SearchIndex, query: &SearchQuery, scope: &SearchScope) -> Vec<String> {
    index
        .search(query, scope)
        .await
        .unwrap_or_else(|e| panic!("{:?}: {e}", query.q))
        .into_iter()
        .map(|hit| hit.id)
        .collect()
}

async fn top(index: &dyn SearchIndex, q: &str) -> Vec<String> {
    ids(index, &query(q), &SearchScope::everything()).await
}

async fn contract(index: Arc<dyn SearchIndex>) {
    let index = index.as_ref();
    let all = SearchScope::everything();
    assert_eq!(
        index.stats().await.unwrap().checkpoint,
        None,
        "a new index has no checkpoint"
    );
    index
        .apply(IndexBatch {
            upserts: fixtures(),
            deletes: vec![],
            checkpoint: Some(7),
        })
        .await
        .unwrap();
    let stats = index.stats().await.unwrap();
    assert_eq!(stats.checkpoint, Some(7));
    assert_eq!(stats.documents, fixtures().len() as u64);

    // Names: exact, one typo, two typos, as you type, swapped order, accents.
    for q in [
        "Ada Lovelace",
        "Ada Lovelase",
        "Adaa Lovleace",
        "lovel",
        "Lovelace Ada",
        "Adá",
    ] {
        assert_eq!(
            top(index, q).await.first().map(String::as_str),
            Some("lead-ada"),
            "{q}"
        );
    }
    // Phones in the formats reps type.
    for q in [
        "+44 20 7946 0958",
        "020 7946 0958",
        "79460958",
        "(020) 7946-0958",
        "+442079460958",
    ] {
        assert_eq!(top(index, q).await, vec!["lead-ada"], "{q}");
    }
    assert_eq!(
        top(index, "07700 900123").await,
        vec!["contact-alan"],
        "a mobile in national form"
    );
    // Email by address, local part and domain.
    for q in [
        "ada.lovelace@analytical.example",
        "ada.lovelace",
        "analytical.example",
        "@analytical.example",
    ] {
        assert_eq!(
            top(index, q).await.first().map(String::as_str),
            Some("lead-ada"),
            "{q}"
        );
    }
    // Ids, document numbers, other kinds.
    assert_eq!(top(index, "INV-2025-00042").await, vec!["inv-1"]);
    assert_eq!(
        top(index, "contact-alan").await.first().map(String::as_str),
        Some("contact-alan")
    );
    assert_eq!(
        top(index, "Bletchly Park")
            .await
            .first()
            .map(String::as_str),
        Some("account-bletchley")
    );
    assert_eq!(top(index, "difference engine").await, vec!["opp-engine"]);
    assert_eq!(top(index, "maintenance").await, vec!["renewal-1"]);

    // Relevance first (exact before a typo's neighbour), then the newest of equals.
    let graces = top(index, "Grace Hopper").await;
    assert_eq!(
        graces[..2],
        ["lead-grace-new", "lead-grace-old"],
        "{graces:?}"
    );
    assert!(
        graces.contains(&"lead-gracie".to_owned()),
        "Gracie Hoppers is a near match"
    );

    // Filters: kind, owner, status, stage; values that match nothing find nothing.
    let mut q = query("Grace Hopper");
    q.status = Some("WORKING".into());
    assert_eq!(ids(index, &q, &all).await, vec!["lead-grace-old"]);
    let mut q = query("engine");
    q.stage = Some("proposal".into());
    assert_eq!(ids(index, &q, &all).await, vec!["opp-engine"]);
    let mut q = query("engine");
    q.kinds = Some(vec![RecordKind::Renewal]);
    assert_eq!(ids(index, &q, &all).await, vec!["renewal-1"]);
    let mut q = query("Ada");
    q.owner = Some("user-2".into());
    assert!(ids(index, &q, &all).await.is_empty());
    let mut q = query("Ada");
    q.status = Some("no-such-status\" OR kind = \"leads".into());
    assert!(
        ids(index, &q, &all).await.is_empty(),
        "a filter value is a value, never syntax"
    );
    assert!(top(index, "Xylophonist Quuxbury").await.is_empty());
    assert!(
        !top(index, "\"Ada Lovelace").await.is_empty(),
        "an unbalanced quote is literal"
    );

    // Highlights: matched words marked, HTML escaped.
    let hits = index.search(&query("lovelase"), &all).await.unwrap();
    assert_eq!(hits[0].highlights["last_name"], "<mark>Lovelace</mark>");
    assert_eq!(hits[0].fields["first_name"], "Ada");
    let hits = index.search(&query("printer"), &all).await.unwrap();
    assert_eq!(
        hits[0].highlights["subject"],
        "<mark>Printer</mark> &lt;script&gt; jammed"
    );
    let hits = index.search(&query("020 7946 0958"), &all).await.unwrap();
    assert_eq!(hits[0].highlights["phone"], "<mark>+442079460958</mark>");

    // The scope: kinds, owners, hidden fields.
    let leads_only = SearchScope {
        kinds: Some(vec![RecordKind::Lead]),
        ..SearchScope::everything()
    };
    assert!(ids(index, &query("Turing"), &leads_only).await.is_empty());
    let mut asked = query("Turing");
    asked.kinds = Some(vec![RecordKind::Contact]);
    assert!(
        ids(index, &asked, &leads_only).await.is_empty(),
        "a query cannot widen its scope"
    );
    let own = SearchScope {
        owner_ids: Some(vec!["user-1".into()]),
        ..SearchScope::everything()
    };
    assert_eq!(ids(index, &query("Ada"), &own).await, vec!["lead-ada"]);
    assert!(ids(index, &query("Grace Hopper"), &own).await.is_empty());
    let nobody = SearchScope {
        owner_ids: Some(vec![]),
        ..SearchScope::everything()
    };
    assert!(ids(index, &query("Ada"), &nobody).await.is_empty());
    let no_mobiles = SearchScope {
        hidden_fields: vec![
            (RecordKind::Contact, "mobile_phone".into()),
            (RecordKind::Lead, "email".into()),
        ],
        ..SearchScope::everything()
    };
    assert!(
        ids(index, &query("07700 900123"), &no_mobiles)
            .await
            .is_empty(),
        "a hit only through a hidden field does not appear"
    );
    assert!(
        ids(
            index,
            &query("ada.lovelace@analytical.example"),
            &no_mobiles
        )
        .await
        .is_empty()
    );
    let hits = index.search(&query("Turing"), &no_mobiles).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert!(
        !hits[0].fields.contains_key("mobile_phone"),
        "hidden fields are not returned"
    );
    assert_eq!(
        hits[0].fields["phone"], "+441908640404",
        "the same field of another kind stays"
    );
    let hits = index.search(&query("lovelace"), &no_mobiles).await.unwrap();
    assert_eq!(hits[0].id, "lead-ada");
    assert!(!hits[0].fields.contains_key("email"));
    assert!(!hits[0].highlights.contains_key("email"), "nor highlighted");
    let contacts_visible = index
        .search(&query("alan@bletchley.example"), &no_mobiles)
        .await
        .unwrap();
    assert_eq!(
        contacts_visible[0].id, "contact-alan",
        "email is hidden on leads only"
    );

    // Replace and delete.
    let mut renamed = fixtures().remove(0);
    renamed.fields.insert("last_name".into(), json!("King"));
    renamed
        .fields
        .insert("email".into(), json!("ada@king.example"));
    renamed.updated_at = "2026-02-01T10:00:00.000000Z".into();
    index.upsert(vec![renamed]).await.unwrap();
    assert!(
        !top(index, "Lovelace")
            .await
            .contains(&"lead-ada".to_owned())
    );
    assert_eq!(
        top(index, "Ada King").await.first().map(String::as_str),
        Some("lead-ada")
    );
    index
        .delete(vec![(RecordKind::Lead, "lead-ada".into())])
        .await
        .unwrap();
    assert!(top(index, "Ada King").await.is_empty());
    assert_eq!(
        index.stats().await.unwrap().checkpoint,
        Some(7),
        "plain writes keep it"
    );

    // Bad input.
    assert!(index.search(&query("   "), &all).await.is_err());
    assert!(
        index
            .search(&query(&"a".repeat(10 * 1024)), &all)
            .await
            .is_err()
    );

    index.clear().await.unwrap();
    let stats = index.stats().await.unwrap();
    assert_eq!((stats.documents, stats.checkpoint), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_index_keeps_the_search_contract() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(&dir.path().join("search")).unwrap();
    contract(Arc::new(index)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meilisearch_keeps_the_search_contract() {
    let Some(url) = std::env::var("LEADGATE_TEST_MEILI_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "SKIPPED meilisearch_keeps_the_search_contract: LEADGATE_TEST_MEILI_URL is unset"
        );
        return;
    };
    let key = std::env::var("LEADGATE_TEST_MEILI_KEY").unwrap_or_default();
    let uid = format!("lgtest_{}", uuid::Uuid::now_v7().simple());
    let index = MeiliIndex::open(&url, &key, &uid)
        .await
        .expect("meilisearch answers");
    contract(Arc::new(index)).await;
}

// ---------------------------------------------------------------------------------------
// The app end to end.
// ---------------------------------------------------------------------------------------

on_both_backends!(
    leads_from_the_partner_api_are_found_with_typos_and_any_phone_format,
    bad_search_input_gets_a_problem_answer_and_odd_input_an_answer,
    the_index_catches_up_after_a_stop_and_never_holds_a_rolled_back_write,
    a_damaged_or_missing_index_directory_is_rebuilt_from_the_store,
    leadgate_reindex_rebuilds_and_leadgate_search_prints_hits,
    a_gateway_only_reads_the_index_and_starts_without_one,
    the_outbox_is_pruned_only_behind_every_consumer_and_a_stopped_indexer_catches_up,
);

async fn a_gateway_only_reads_the_index_and_starts_without_one(backend: Backend) {
    let app = common::spawn_app_with_config(backend, |config| {
        config.role = leadgate::config::Role::Gateway;
    })
    .await;
    app.store
        .write(&ctx(), vec![lead("Mary", "Jackson")])
        .await
        .unwrap();
    let (status, body) = search(&app, "q=Mary+Jackson").await;
    assert_eq!(
        (status, body["hits"].clone()),
        (200, json!([])),
        "nothing indexes here"
    );
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["search"]["checkpoint"], Value::Null, "{ready}");
    // A worker on the same data directory builds it; the gateway then finds the record.
    let worker_config = leadgate::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        role: leadgate::config::Role::Worker,
        ..app.config.clone()
    };
    let worker = leadgate::startup::Application::build(worker_config)
        .await
        .expect("worker builds");
    let handle = worker.handle();
    let running = tokio::spawn(worker.run_until_stopped());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = search(&app, "q=Mary+Jackson").await;
        if body["hits"].as_array().is_some_and(|h| h.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never saw the worker's index: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.stop(true).await;
    let _ = running.await;
    app.stop().await;
}

async fn search(app: &TestApp, params: &str) -> (u16, Value) {
    let (status, body) = app.get_json(&format!("/v1/search?{params}")).await;
    (status.as_u16(), body)
}

/// Waits until the index has applied every committed change.
async fn indexed(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ready) = app.get_json("/readyz").await;
        if ready["search"]["lag"] == 0 {
            return ready;
        }
        assert!(Instant::now() < deadline, "index still behind: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(app: &TestApp, key: &str, lead: Value) -> String {
    let receipt: Value = app
        .post_json(key, "/v1/partner/leads", &lead)
        .await
        .json()
        .await
        .unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    assert_eq!(row["status"], "done", "{row}");
    row["result"]["id"].as_str().unwrap().to_owned()
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("hits in {body}"))
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

async fn leads_from_the_partner_api_are_found_with_typos_and_any_phone_format(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let margaret = submit(
        &app,
        &key,
        json!({"external_id": "m1", "first_name": "Margaret",
        "last_name": "Hamilton", "email": "margaret.hamilton@apollo.example",
        "phone": "020 7946 0958", "company": "MIT Instrumentation Lab"}),
    )
    .await;
    let katherine = submit(
        &app,
        &key,
        json!({"external_id": "k1", "first_name": "Katherine",
        "last_name": "Johnson", "email": "kj@langley.example", "phone": "+1 757 555 0199"}),
    )
    .await;
    let ready = indexed(&app).await;
    assert_eq!(ready["search"]["backend"], "tantivy");
    assert!(
        ready["search"]["documents"].as_u64().unwrap() >= 2,
        "{ready}"
    );

    for q in [
        "Margaret Hamilton",
        "Margret Hamiltn",
        "Hamilton Margaret",
        "hamil",
        "+44 20 7946 0958",
        "020 7946 0958",
        "79460958",
        "margaret.hamilton",
        "margaret.hamilton@apollo.example",
    ] {
        let (status, body) = search(&app, &format!("q={}", encode(q))).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(hit_ids(&body).first(), Some(&margaret), "{q}: {body}");
    }
    // The pipeline made an account of the same company and domain: both are found.
    for q in ["apollo.example", "Instrumentation"] {
        let (_, body) = search(&app, &format!("q={q}")).await;
        assert!(hit_ids(&body).contains(&margaret), "{q}: {body}");
        assert!(
            body["hits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["kind"] == "accounts"),
            "{body}"
        );
    }
    let (_, body) = search(&app, "q=Katherin+Jonson&kind=leads&limit=5").await;
    assert_eq!(hit_ids(&body), vec![katherine.clone()]);
    assert_eq!(
        body["hits"][0]["highlights"]["first_name"],
        "<mark>Katherine</mark>"
    );
    assert_eq!(body["hits"][0]["fields"]["phone"], "+17575550199");
    let (_, body) = search(&app, "q=Katherine&status=new").await;
    assert!(body["hits"].is_array(), "{body}");

    // An edit through the write path reaches the index after commit.
    let response = app
        .client
        .patch(format!("{}/v1/leads/{katherine}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"last_name": "Goble"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    indexed(&app).await;
    let (_, body) = search(&app, "q=Katherine+Goble").await;
    assert_eq!(hit_ids(&body), vec![katherine.clone()]);
    let (_, body) = search(&app, "q=Katherine+Johnson").await;
    assert!(
        !hit_ids(&body).contains(&katherine)
            || body["hits"][0]["highlights"].get("last_name").is_none()
    );

    let openapi: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/search"]["get"].is_object());
    app.stop().await;
}

async fn bad_search_input_gets_a_problem_answer_and_odd_input_an_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let problem = |body: &Value, needle: &str| {
        assert_eq!(body["status"], 400, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    };
    let (status, body) = search(&app, "q=").await;
    assert_eq!(status, 400);
    problem(&body, "empty");
    let (_, body) = search(&app, "kind=leads").await;
    problem(&body, "`q` is required");
    let long = "a".repeat(10 * 1024);
    let (status, body) = search(&app, &format!("q={long}")).await;
    assert_eq!(status, 400);
    problem(&body, "at most 1024");
    let (_, body) = search(&app, "q=ada&kind=widgets").await;
    problem(&body, "widgets");
    let (_, body) = search(&app, "q=ada&kind=activities").await;
    problem(&body, "not searchable");
    let (_, body) = search(&app, "q=ada&limit=many").await;
    problem(&body, "limit");
    let (_, body) = search(&app, "q=ada&limit=100000").await;
    problem(&body, "limit");

    for q in [
        "\"ada",
        "ada\" OR \"",
        "((]]",
        "%22%22%22",
        "*",
        "ada AND",
        "-",
        "NOT",
    ] {
        let (status, body) = search(&app, &format!("q={}", encode(q))).await;
        assert!(status == 200 || status == 400, "{q}: {status} {body}");
        if status == 400 {
            problem(&body, "empty");
        }
    }
    let (status, body) = search(&app, "q=ada&owner=nobody&status=nothing&stage=none").await;
    assert_eq!((status, body["hits"].clone()), (200, json!([])));

    let response = app
        .client
        .get(format!("{}/v1/search?q=ada", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}

fn lead(first: &str, last: &str) -> Change {
    let mut fields = Map::new();
    fields.insert("first_name".into(), json!(first));
    fields.insert("last_name".into(), json!(last));
    Change::Insert {
        kind: RecordKind::Lead,
        id: None,
        fields,
    }
}

fn ctx() -> WriteContext {
    WriteContext::new("test", "test", RequestMeta::default())
}

async fn the_index_catches_up_after_a_stop_and_never_holds_a_rolled_back_write(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store
        .write(&ctx(), vec![lead("Hedy", "Lamarr")])
        .await
        .unwrap();
    let ready = indexed(&app).await;
    let checkpoint = ready["search"]["checkpoint"].as_i64().unwrap();
    assert!(checkpoint > 0, "{ready}");

    // Written while no indexer runs (as after a crash): found once it is back.
    let app = app
        .restart_with(async |config| {
            let store = Store::connect(&config.effective_database_url(), 2)
                .await
                .unwrap();
            store
                .write(&ctx(), vec![lead("Barbara", "Liskov")])
                .await
                .unwrap();
            // A transaction that rolls back leaves nothing to index.
            let mut tx = store.begin_write().await.unwrap();
            leadgate::store::write::apply(&mut tx, &ctx(), vec![lead("Rolled", "Backwards")])
                .await
                .unwrap();
            drop(tx);
            store.close().await;
        })
        .await;
    let ready = indexed(&app).await;
    assert!(ready["search"]["checkpoint"].as_i64().unwrap() > checkpoint);
    let (_, body) = search(&app, "q=Barbra+Liskov").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = search(&app, "q=Hedy").await;
    assert_eq!(
        body["hits"].as_array().unwrap().len(),
        1,
        "kept from before the stop: {body}"
    );
    let (_, body) = search(&app, "q=Rolled+Backwards").await;
    assert_eq!(
        body["hits"],
        json!([]),
        "the index never holds a rolled-back write"
    );

    // A deleted record leaves the index.
    let (_, body) = search(&app, "q=Hedy").await;
    let hedy = body["hits"][0]["id"].as_str().unwrap().to_owned();
    app.store
        .write(
            &ctx(),
            vec![Change::Delete {
                kind: RecordKind::Lead,
                id: hedy,
            }],
        )
        .await
        .unwrap();
    indexed(&app).await;
    let (_, body) = search(&app, "q=Hedy").await;
    assert_eq!(body["hits"], json!([]));
    app.stop().await;
}

async fn a_damaged_or_missing_index_directory_is_rebuilt_from_the_store(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store
        .write(
            &ctx(),
            vec![lead("Chien-Shiung", "Wu"), lead("Lise", "Meitner")],
        )
        .await
        .unwrap();
    indexed(&app).await;
    let dir = app.config.data_dir.join("search");
    let app = app
        .restart_with(async |_| {
            std::fs::write(dir.join("meta.json"), b"{ not json").unwrap();
        })
        .await;
    let ready = indexed(&app).await;
    assert_eq!(ready["search"]["documents"], 2, "{ready}");
    let (_, body) = search(&app, "q=Meitnr").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");

    let app = app
        .restart_with(async |_| {
            std::fs::remove_dir_all(&dir).unwrap();
        })
        .await;
    indexed(&app).await;
    let (_, body) = search(&app, "q=Lise").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");

    // A segment file gone (a disk error, a careless cleanup).
    let app = app
        .restart_with(async |_| {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "term") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        })
        .await;
    indexed(&app).await;
    let (_, body) = search(&app, "q=Chien+Wu").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");
    app.stop().await;
}

async fn leadgate_reindex_rebuilds_and_leadgate_search_prints_hits(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store
        .write(
            &ctx(),
            vec![lead("Rosalind", "Franklin"), lead("Dorothy", "Hodgkin")],
        )
        .await
        .unwrap();
    indexed(&app).await;
    let cli = |config: &leadgate::config::Config, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .arg("--data-dir")
            .arg(&config.data_dir)
            .args(args)
            .env("LEADGATE_DATABASE_URL", &config.database_url)
            .env("LEADGATE_LOG", "warn")
            .output()
            .expect("leadgate runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut printed = String::new();
    let app = app
        .restart_with(async |config| {
            let reindexed = cli(config, &["reindex"]);
            assert!(reindexed.contains("indexed 2 records"), "{reindexed}");
            printed = cli(config, &["search", "Rosalnd Franklin", "--kind", "leads"]);
        })
        .await;
    assert!(printed.starts_with("leads"), "{printed}");
    assert!(printed.contains("<mark>Franklin</mark>"), "{printed}");
    let ready = indexed(&app).await;
    assert_eq!(ready["search"]["documents"], 2);
    app.stop().await;
}

async fn outbox_rows(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Outbox rows of leads (the app's own requests add rows for its API token too).
async fn lead_rows(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE record_kind = $1")
        .bind("leads")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A follower that has applied everything there is and will be.
const CAUGHT_UP: i64 = i64::MAX;

async fn until_outbox_has(store: &Store, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox_rows(store).await != rows {
        if Instant::now() > deadline {
            let left: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, record_kind FROM outbox ORDER BY seq")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            let consumers: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT name, checkpoint, seen_at FROM outbox_consumers")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            panic!(
                "the outbox still has {left:?}, not {rows} rows; consumers {consumers:?}, pruned through {}",
                store.outbox_pruned_through().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn the_outbox_is_pruned_only_behind_every_consumer_and_a_stopped_indexer_catches_up(
    backend: Backend,
) {
    let app = common::spawn_app_with_config(backend, |config| {
        config.search.outbox_prune_secs = 1;
    })
    .await;
    app.store
        .write(
            &ctx(),
            vec![lead("Grace", "Hopper"), lead("Katherine", "Johnson")],
        )
        .await
        .unwrap();
    indexed(&app).await;
    // Applied by the only consumer, the app's indexer: pruned.
    until_outbox_has(&app.store, 0).await;
    assert!(app.store.outbox_pruned_through().await.unwrap() > 0);
    let (_, body) = search(&app, "q=Grace+Hoper").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");

    // A second follower (another worker's index) that has not applied the next row holds
    // it back, however long the app's indexer has had it.
    let through = app.store.outbox_pruned_through().await.unwrap();
    app.store
        .outbox_report("test-follower", through, unix_now())
        .await
        .unwrap();
    app.store
        .write(&ctx(), vec![lead("Dorothy", "Vaughan")])
        .await
        .unwrap();
    indexed(&app).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        lead_rows(&app.store).await,
        1,
        "the follower has not applied it"
    );
    app.store
        .outbox_report("test-follower", CAUGHT_UP, unix_now())
        .await
        .unwrap();
    until_outbox_has(&app.store, 0).await;

    // Written while the indexer is stopped (as after a crash): a prune meanwhile keeps it,
    // and the indexer applies it when it is back.
    let app = app
        .restart_with(async |config| {
            let store = Store::connect(&config.effective_database_url(), 2)
                .await
                .unwrap();
            store
                .write(&ctx(), vec![lead("Mary", "Jackson")])
                .await
                .unwrap();
            store
                .outbox_prune(unix_now() - 3600, 100, 10)
                .await
                .unwrap();
            assert_eq!(
                lead_rows(&store).await,
                1,
                "the stopped indexer has not applied it"
            );
            store.close().await;
        })
        .await;
    indexed(&app).await;
    let (_, body) = search(&app, "q=Mary+Jacksn").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");
    until_outbox_has(&app.store, 0).await;

    // Stopped for longer than pruning waits for a consumer: its rows go without it, and
    // when it is back it finds them gone and rebuilds from the store.
    let app = app
        .restart_with(async |config| {
            let store = Store::connect(&config.effective_database_url(), 2)
                .await
                .unwrap();
            store
                .write(&ctx(), vec![lead("Annie", "Easley")])
                .await
                .unwrap();
            sqlx::query("UPDATE outbox_consumers SET seen_at = $1 WHERE name <> $2")
                .bind(unix_now() - 8 * 24 * 3600)
                .bind("test-follower")
                .execute(store.pool())
                .await
                .unwrap();
            let newest = store.outbox_max_seq().await.unwrap();
            store
                .outbox_prune(unix_now() - 7 * 24 * 3600, 100, 10)
                .await
                .unwrap();
            assert_eq!(
                lead_rows(&store).await,
                0,
                "pruned without the stopped indexer"
            );
            assert_eq!(
                store.outbox_pruned_through().await.unwrap(),
                newest,
                "the mark never passes seqs not yet taken, however far a consumer claims"
            );
            store.close().await;
        })
        .await;
    // Behind by the pruned row until the rebuild.
    let ready = indexed(&app).await;
    assert_eq!(ready["search"]["documents"], 5, "{ready}");
    let (_, body) = search(&app, "q=Annie+Easly").await;
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        ready["search"]["checkpoint"].as_i64().unwrap()
            >= app.store.outbox_pruned_through().await.unwrap()
    );
    app.stop().await;
}
