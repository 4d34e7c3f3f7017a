//! Health, readiness, metrics, OpenAPI, and the answers when the store is unavailable.

mod common;

use std::time::Duration;

use common::{Backend, spawn_app};
use serde_json::{Value, json};
use sqlx::Connection;

on_both_backends!(
    probes_metrics_and_openapi_answer,
    the_inbox_depth_counts_each_state
);

/// `inbox_depth` reads the open and failed rows from their indexes and the rest from a
/// count of the table: each state still comes out right.
async fn the_inbox_depth_counts_each_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let receipt: Value = app
            .post_json(
                &key,
                "/v1/partner/leads",
                &json!({"email": format!("depth{n}@example.org")}),
            )
            .await
            .json()
            .await
            .unwrap();
        let id = receipt["id"].as_str().unwrap().to_owned();
        app.settled_inbound(&id).await;
        ids.push(id);
    }
    // The worker claims only pending rows: these two states stay as set.
    for (id, status) in [(&ids[0], "failed"), (&ids[1], "processing")] {
        sqlx::query("UPDATE inbox SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id.as_str())
            .execute(app.store.pool())
            .await
            .unwrap();
    }
    let depth = app.store.inbox_depth().await.unwrap();
    assert_eq!(
        (depth.pending, depth.processing, depth.failed, depth.done),
        (0, 1, 1, 2)
    );
    // Released rows go back to the queue (and through the worker); a failed row is not
    // claimed, so releasing it changes nothing.
    app.store
        .release_claimed(&[ids[1].as_str(), ids[0].as_str()])
        .await
        .unwrap();
    assert_eq!(app.settled_inbound(&ids[1]).await["status"], "done");
    let (_, failed) = app.get_json(&format!("/v1/inbound/{}", ids[0])).await;
    assert_eq!(failed["status"], "failed");
    app.stop().await;
}

async fn probes_metrics_and_openapi_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let get = |path: &'static str| app.client.get(format!("{}{path}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["migrations"], "applied");
    assert_eq!(ready["inbox"]["pending"], 0);

    let key = app.partner_token("acme").await;
    let receipt: Value = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"email": "m@example.org"}),
        )
        .await
        .json()
        .await
        .unwrap();
    app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        "leadgate_inbound_accepted_total{source=\"partner\"} 1",
        "leadgate_inbound_processed_total{source=\"partner\"} 1",
        "leadgate_inbox_rows{status=\"done\"} 1",
        "leadgate_http_requests_total{method=\"POST\",route=\"/v1/partner/leads\",status=\"202\"} 1",
        "leadgate_stage_seconds_count{stage=\"batch\"}",
        "leadgate_group_commit_items_count",
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }

    let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    for path in [
        "/v1/partner/leads",
        "/v1/{kind}/{id}",
        "/v1/{kind}/{id}/audit",
        "/v1/inbound/{id}/retry",
        "/readyz",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    assert!(openapi["components"]["securitySchemes"]["bearer"].is_object());

    let unknown = get("/v1/nowhere/at/all").await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

/// Another process holding SQLite's write lock stands in for a store that cannot take
/// writes: the gateway answers 503 with Retry-After, keeps nothing half-written, and
/// accepts again once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_answers_503_and_keeps_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.partner_token("acme").await;
    let url = format!(
        "sqlite://{}",
        app.config.data_dir.join("leadgate.db").display()
    );
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let response = tokio::time::timeout(
        Duration::from_secs(20),
        app.post_json(
            &key,
            "/v1/partner/leads",
            &json!({"email": "lost@example.org", "external_id": "z1"}),
        ),
    )
    .await
    .expect("answers within the busy timeout");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    let depth = app.store.inbox_depth().await.unwrap();
    assert_eq!(
        depth.pending + depth.processing + depth.done + depth.failed,
        0,
        "nothing half-written"
    );
    let again = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"email": "lost@example.org", "external_id": "z1"}),
        )
        .await;
    assert_eq!(again.status(), 202);
    assert!(
        again.headers().get("idempotent-replayed").is_none(),
        "the 503 kept nothing to replay"
    );
    app.stop().await;
}

/// A PostgreSQL database that disappears under the running server: 503, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_that_goes_away_answers_503() {
    if !common::postgres_enabled() {
        eprintln!("SKIPPED a_postgres_store_that_goes_away_answers_503: LEADGATE_TEST_PG is unset");
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let key = app.partner_token("acme").await;
    let name = app
        .config
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut admin = sqlx::PgConnection::connect(&std::env::var("LEADGATE_TEST_PG").unwrap())
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let response = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"email": "gone@example.org"}),
        )
        .await;
    assert_eq!(response.status(), 503, "{:?}", response.text().await);
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    app.stop().await;
}
