//! The actix-web application: routes, shared state and the OpenAPI document.

mod auth;
mod channels;
pub mod error;
mod imports;
mod inbound;
mod ops;
mod partner;
mod rate_limit;
mod records;
mod request;
mod review;
mod search;

use std::sync::Arc;

use actix_web::web;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::config::{Config, Role};
use crate::queue::Accepter;
use crate::store::Store;
use crate::store::tokens::TokenCache;
use crate::telemetry::Metrics;

pub use auth::Principal;
pub use error::ApiError;
pub use rate_limit::RateLimiter;
pub use request::request_context;

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub accepter: Accepter,
    pub metrics: Arc<Metrics>,
    /// Wakes the inbox worker (new rows, retries).
    pub appended: Arc<Notify>,
    pub tokens: TokenCache,
    /// The pipeline, for operations that re-read an arrival (unmerge).
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// Per-client-IP limit of the public endpoints (forms, webhooks).
    pub limiter: RateLimiter,
    /// The search index (embedded or Meilisearch).
    pub search: Arc<dyn crate::search::SearchIndex>,
}

pub fn routes(cfg: &mut web::ServiceConfig, role: Role) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi);
    if role == Role::Worker {
        return;
    }
    cfg.service(partner::submit_leads)
        .service(partner::submission_status)
        .service(channels::forms::submit_form)
        .service(channels::forms::preflight_form)
        .service(channels::whatsapp::whatsapp_handshake)
        .service(channels::whatsapp::whatsapp_webhook)
        .service(channels::cti::cti_webhook)
        .service(channels::zoom::zoom_webhook)
        .service(channels::email::inbound_email)
        .service(imports::create_import)
        .service(imports::import_errors_csv)
        .service(imports::get_import)
        .service(inbound::list_inbound)
        .service(inbound::get_inbound)
        .service(inbound::retry_inbound)
        .service(search::search_records)
        .service(review::list_review)
        .service(review::decide_review)
        .service(records::convert_lead)
        .service(review::unmerge_lead)
        .service(records::get_timeline)
        .service(records::get_audit)
        .service(records::get_record)
        .service(records::patch_record);
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "leadgate", description = "Integration gateway and ingestion pipeline of a CRM"),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        partner::submit_leads, partner::submission_status,
        channels::forms::submit_form, channels::forms::preflight_form,
        channels::whatsapp::whatsapp_handshake, channels::whatsapp::whatsapp_webhook,
        channels::cti::cti_webhook, channels::zoom::zoom_webhook, channels::email::inbound_email,
        imports::create_import, imports::get_import, imports::import_errors_csv,
        inbound::get_inbound, inbound::list_inbound, inbound::retry_inbound,
        review::list_review, review::decide_review, review::unmerge_lead,
        records::get_record, records::patch_record, records::get_timeline, records::get_audit,
        records::convert_lead, search::search_records,
    ),
    components(schemas(
        error::Problem, error::FieldProblem, partner::BatchReceipt, partner::SubmissionStatus,
        channels::whatsapp::WebhookReceipt, channels::cti::ScreenPop, channels::cti::Caller,
        imports::ImportAccepted, imports::ImportStatus, channels::email::EmailReceipt,
        search::SearchAnswer, crate::search::SearchHit, ops::SearchReadiness,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
