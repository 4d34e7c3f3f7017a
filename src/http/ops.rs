//! Liveness, readiness, metrics and the OpenAPI document.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::store::inbox::InboxDepth;

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub store: String,
    pub migrations: String,
    pub inbox: Option<InboxDepth>,
    /// The search index and how far it is behind the store.
    pub search: Option<SearchReadiness>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchReadiness {
    pub backend: String,
    pub documents: u64,
    /// The last outbox seq in the index; `null` before the first build.
    pub checkpoint: Option<i64>,
    /// Committed changes (outbox rows) after the index's checkpoint.
    pub lag: Option<i64>,
    /// Why the index could not be read, when it could not.
    pub error: Option<String>,
}

async fn search_readiness(state: &AppState) -> SearchReadiness {
    match state.search.stats().await {
        Ok(stats) => {
            let lag = match stats.checkpoint {
                Some(checkpoint) => state.store.outbox_count_after(checkpoint).await.ok(),
                None => None,
            };
            SearchReadiness {
                lag,
                backend: stats.backend,
                documents: stats.documents,
                checkpoint: stats.checkpoint,
                error: None,
            }
        }
        Err(error) => SearchReadiness {
            backend: state.search.backend().to_owned(),
            documents: 0,
            checkpoint: None,
            lag: None,
            error: Some(error.to_string()),
        },
    }
}

/// The process is up.
#[utoipa::path(tag = "ops", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The store answers and its migrations are applied; 503 otherwise. The search index's
/// lag is reported, not judged: a rebuilding index still serves (older) answers.
#[utoipa::path(tag = "ops", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (store, migrations, inbox) = match state.store.ping().await {
        Err(error) => (format!("unreachable: {error}"), "unknown".to_owned(), None),
        Ok(()) => {
            let migrations = match state.store.ready().await {
                Ok(true) => "applied".to_owned(),
                Ok(false) => "pending".to_owned(),
                Err(error) => format!("unknown: {error}"),
            };
            (
                "ok".to_owned(),
                migrations,
                state.store.inbox_depth().await.ok(),
            )
        }
    };
    let ready = store == "ok" && migrations == "applied";
    let search = Some(search_readiness(&state).await);
    let body = Readiness {
        ready,
        store,
        migrations,
        inbox,
        search,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition.
#[utoipa::path(tag = "ops", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(depth) = state.store.inbox_depth().await {
        let gauge = &state.metrics.inbox_depth;
        gauge.with_label_values(&["pending"]).set(depth.pending);
        gauge
            .with_label_values(&["processing"])
            .set(depth.processing);
        gauge.with_label_values(&["failed"]).set(depth.failed);
        gauge.with_label_values(&["done"]).set(depth.done);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// This document.
#[utoipa::path(tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::ApiDoc::openapi())
}
