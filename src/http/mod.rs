//! The actix-web application: routes, shared state and the OpenAPI document.

mod auth;
pub mod error;
mod imports;
mod inbound;
mod ops;
mod partner;
mod records;
mod request;

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
        .service(imports::create_import)
        .service(imports::import_errors_csv)
        .service(imports::get_import)
        .service(inbound::list_inbound)
        .service(inbound::get_inbound)
        .service(inbound::retry_inbound)
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
        partner::submit_leads,
        imports::create_import, imports::get_import, imports::import_errors_csv,
        inbound::get_inbound, inbound::list_inbound, inbound::retry_inbound,
        records::get_record, records::patch_record, records::get_timeline, records::get_audit,
    ),
    components(schemas(error::Problem, partner::BatchReceipt, imports::ImportAccepted, imports::ImportStatus)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
