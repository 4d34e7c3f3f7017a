//! The actix-web application: routes, shared state and the OpenAPI document.

mod admin;
mod audit;
mod auth;
mod billing;
pub mod caller;
mod channels;
mod console;
pub mod error;
mod imports;
mod inbound;
pub mod nurture;
mod ops;
mod outbound;
mod partner;
mod rate_limit;
mod records;
mod request;
mod review;
mod search;
mod service;
mod session;

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
    /// Roles compiled from configuration.
    pub access: crate::access::AccessPolicy,
    pub reach: caller::ReachCache,
    /// Per-client-IP limit of sign-in attempts.
    pub sign_in_limiter: RateLimiter,
    /// Per-partner limit of the partner API (`partners.<name>.rate_limit_per_minute`).
    pub partner_limiter: RateLimiter<String>,
    /// The search index (embedded or Meilisearch).
    pub search: Arc<dyn crate::search::SearchIndex>,
    /// Nurturing: its configuration, the tracking key and the score rules.
    pub nurture: Arc<nurture::NurtureState>,
    /// Tickets, SLA, contracts and expansion rules (`[service]`).
    pub service: Arc<crate::service::Service>,
}

pub fn routes(cfg: &mut web::ServiceConfig, role: Role) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi);
    if role == Role::Worker {
        return;
    }
    cfg.service(console::index)
        .service(console::settings)
        .service(console::asset)
        .service(console::sign_in)
        .service(console::sign_out)
        .service(partner::submit_leads)
        .service(partner::submission_status)
        .service(channels::forms::submit_form)
        .service(channels::forms::preflight_form)
        .service(channels::whatsapp::whatsapp_handshake)
        .service(channels::whatsapp::whatsapp_webhook)
        .service(channels::cti::cti_webhook)
        .service(channels::zoom::zoom_webhook)
        .service(channels::email::inbound_email)
        .service(imports::create_import)
        .service(imports::list_imports)
        .service(imports::import_errors_csv)
        .service(imports::get_import)
        .service(imports::undo_import)
        .service(inbound::inbound_channels)
        .service(inbound::list_inbound)
        .service(inbound::get_inbound)
        .service(inbound::retry_inbound)
        .service(search::search_records)
        .service(review::list_review)
        .service(review::decide_review)
        .service(session::sign_in)
        .service(session::sign_out)
        .service(session::me)
        .service(admin::list_users)
        .service(admin::create_user)
        .service(admin::update_user)
        .service(admin::delete_user)
        .service(admin::create_user_token)
        .service(admin::create_partner)
        .service(admin::revoke_token)
        .service(admin::list_teams)
        .service(admin::create_team)
        .service(admin::update_team)
        .service(audit::search_audit)
        .service(records::convert_lead)
        .service(outbound::send_whatsapp)
        .service(nurture::save_template)
        .service(nurture::list_templates)
        .service(nurture::create_sequence)
        .service(nurture::list_sequences)
        .service(nurture::get_sequence)
        .service(nurture::update_sequence)
        .service(nurture::enrol_lead)
        .service(nurture::send_email)
        .service(nurture::outbox_state)
        .service(nurture::add_suppression)
        .service(nurture::get_suppression)
        .service(nurture::delete_suppression)
        .service(nurture::provider_webhook)
        .service(nurture::open_pixel)
        .service(nurture::click_redirect)
        .service(nurture::unsubscribe_page)
        .service(nurture::unsubscribe)
        .service(review::unmerge_lead)
        .service(service::create_ticket)
        .service(service::patch_ticket)
        .service(service::ticket_status)
        .service(service::ticket_reply)
        .service(service::create_contract)
        .service(service::patch_contract)
        .service(service::contract_status)
        .service(service::evaluate_expansion)
        .service(billing::create_order)
        .service(billing::order_from_opportunity)
        .service(billing::change_order_status)
        .service(billing::get_order_lines)
        .service(billing::invoice_order)
        .service(billing::create_invoice)
        .service(billing::get_invoice_lines)
        .service(billing::issue_invoice)
        .service(billing::create_credit_note)
        .service(billing::invoice_pdf)
        .service(billing::create_payment)
        .service(billing::get_payment_allocations)
        .service(billing::allocate_payment)
        .service(billing::refund_payment)
        .service(billing::account_credit)
        .service(billing::ageing_report)
        .service(channels::stripe::stripe_webhook)
        .service(records::get_timeline)
        .service(records::get_audit)
        // `/v1/{kind}…` last: every fixed path above wins over it.
        .service(records::get_record)
        .service(records::patch_record)
        .service(records::delete_record)
        .service(records::list_records)
        .service(records::create_record);
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
        console::index, console::settings, console::sign_in, console::sign_out,
        partner::submit_leads, partner::submission_status,
        channels::forms::submit_form, channels::forms::preflight_form,
        channels::whatsapp::whatsapp_handshake, channels::whatsapp::whatsapp_webhook,
        channels::cti::cti_webhook, channels::zoom::zoom_webhook, channels::email::inbound_email,
        imports::create_import, imports::list_imports, imports::get_import, imports::import_errors_csv, imports::undo_import,
        inbound::get_inbound, inbound::list_inbound, inbound::inbound_channels, inbound::retry_inbound,
        review::list_review, review::decide_review, review::unmerge_lead,
        records::get_record, records::patch_record, records::get_timeline, records::get_audit,
        records::convert_lead, records::list_records, records::create_record, records::delete_record,
        audit::search_audit, session::sign_in, session::sign_out, session::me,
        admin::list_users, admin::create_user, admin::update_user, admin::delete_user,
        admin::create_user_token, admin::create_partner, admin::revoke_token,
        admin::list_teams, admin::create_team, admin::update_team,
        outbound::send_whatsapp,
        search::search_records,
        nurture::save_template, nurture::list_templates, nurture::create_sequence,
        nurture::list_sequences, nurture::get_sequence, nurture::update_sequence, nurture::enrol_lead, nurture::send_email,
        nurture::outbox_state, nurture::add_suppression, nurture::get_suppression,
        nurture::delete_suppression, nurture::provider_webhook, nurture::open_pixel,
        nurture::click_redirect, nurture::unsubscribe_page, nurture::unsubscribe,
        service::create_ticket, service::patch_ticket, service::ticket_status,
        service::ticket_reply, service::create_contract, service::patch_contract,
        service::contract_status, service::evaluate_expansion,
        billing::create_order, billing::order_from_opportunity, billing::change_order_status,
        billing::get_order_lines, billing::invoice_order, billing::create_invoice,
        billing::get_invoice_lines, billing::issue_invoice, billing::create_credit_note,
        billing::invoice_pdf, billing::create_payment, billing::get_payment_allocations,
        billing::allocate_payment, billing::refund_payment, billing::account_credit,
        billing::ageing_report, channels::stripe::stripe_webhook,
    ),
    components(schemas(
        error::Problem, error::FieldProblem, partner::BatchReceipt, partner::SubmissionStatus,
        partner::ItemResult, partner::BatchResults,
        channels::whatsapp::WebhookReceipt, channels::cti::ScreenPop, channels::cti::Caller,
        imports::ImportAccepted, imports::ImportStatus, imports::ImportList, inbound::InboxChannels, crate::import::undo::UndoReport, channels::email::EmailReceipt,
        records::RecordList, audit::AuditPage, session::SignIn, session::Session, session::Me,
        admin::NewUser, admin::UserChange, admin::NewToken, admin::NewPartner, admin::TeamChange,
        admin::IssuedToken, admin::Users, admin::Teams,
        outbound::SendWhatsApp, outbound::MessageQueued,
        search::SearchAnswer, crate::search::SearchHit, ops::SearchReadiness,
        crate::nurture::templates::TemplateInput, crate::nurture::templates::EmailTemplate,
        crate::nurture::sequences::SequenceInput, crate::nurture::sequences::Sequence,
        crate::nurture::sequences::Step, crate::nurture::sequences::EnrolRule,
        crate::nurture::sequences::Engagement, crate::nurture::sequences::Enrolment,
        crate::nurture::outbox::OutboxState, nurture::SequenceDetail, nurture::EnrolRequest, nurture::SequenceChange,
        nurture::SendEmail, nurture::EmailQueued, nurture::Suppress,
        service::NewTicketBody, service::StatusChange, service::ReplyBody,
        service::ReplyReceipt, service::ExpansionResult,
        billing::OrderView, billing::InvoiceView, billing::PaymentView, billing::StatusChange,
        billing::AccountCredit, crate::billing::orders::NewOrder,
        crate::billing::orders::OrderFromOpportunity, crate::billing::lines::LineInput,
        crate::billing::lines::TaxLine, crate::billing::invoices::NewInvoice,
        crate::billing::invoices::InvoiceFromOrder, crate::billing::invoices::NewCreditNote,
        crate::billing::payments::NewPayment, crate::billing::payments::AllocationInput,
        crate::billing::payments::NewRefund, crate::billing::ageing::Ageing,
        crate::billing::ageing::AgeingRow,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
