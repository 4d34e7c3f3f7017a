//! `GET|POST /v1/webhooks/whatsapp`: the Meta WhatsApp Cloud API webhook.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use connectors::whatsapp::{self, WhatsAppError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{header, make_durable, rate_limit, reject, signature_failed};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request::read_body;
use crate::store::RequestMeta;
use crate::store::inbox::Receipt;

const CHANNEL: &str = whatsapp::SOURCE;

#[derive(Debug, Deserialize, IntoParams)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// The records one delivery became, in order (messages, then statuses).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub items: Vec<Receipt>,
}

/// The subscription handshake: echoes `hub.challenge` when `hub.verify_token` matches.
#[utoipa::path(
    tag = "channels",
    params(Handshake),
    responses(
        (status = 200, description = "the challenge, as text/plain", body = String),
        (status = 400, description = "a parameter is missing or hub.mode is not subscribe", body = crate::http::error::Problem),
        (status = 403, description = "verify token mismatch", body = crate::http::error::Problem),
        (status = 404, description = "WhatsApp is not configured", body = crate::http::error::Problem),
    )
)]
#[get("/v1/webhooks/whatsapp")]
pub async fn whatsapp_handshake(
    req: HttpRequest,
    query: web::Query<Handshake>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&req, &state, CHANNEL)?;
    let expected = &state.config.whatsapp.verify_token;
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("the WhatsApp channel".into()));
    }
    match whatsapp::verify_challenge(
        query.mode.as_deref(),
        query.verify_token.as_deref(),
        query.challenge.as_deref(),
        expected,
    ) {
        Ok(challenge) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(challenge)),
        Err(WhatsAppError::VerifyTokenMismatch) => {
            reject(&state, CHANNEL, "verify_token");
            Err(ApiError::Forbidden(
                "hub.verify_token does not match".into(),
            ))
        }
        Err(error) => {
            reject(&state, CHANNEL, "malformed");
            Err(ApiError::BadRequest(error.to_string()))
        }
    }
}

/// Message and status notifications, signed with `X-Hub-Signature-256`.
///
/// One inbound record per message and per status, each durable before the `200`; message
/// types leadgate does not know are stored as they came. A redelivery answers the same ids.
#[utoipa::path(
    tag = "channels",
    request_body(content = Object, content_type = "application/json"),
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body, keyed with the app secret>")),
    responses(
        (status = 200, description = "durable in the inbox", body = WebhookReceipt),
        (status = 400, description = "not webhook JSON", body = crate::http::error::Problem),
        (status = 401, description = "signature missing or invalid", body = crate::http::error::Problem),
        (status = 404, description = "WhatsApp is not configured", body = crate::http::error::Problem),
        (status = 413, description = "body too large", body = crate::http::error::Problem),
        (status = 429, description = "rate limited", body = crate::http::error::Problem),
    )
)]
#[post("/v1/webhooks/whatsapp")]
pub async fn whatsapp_webhook(
    req: HttpRequest,
    payload: web::Payload,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&req, &state, CHANNEL)?;
    let secret = &state.config.whatsapp.app_secret;
    if secret.is_empty() {
        return Err(ApiError::NotConfigured("the WhatsApp channel".into()));
    }
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    match whatsapp::verify_signature(secret, &body, header(&req, whatsapp::SIGNATURE_HEADER)) {
        Ok(()) => {}
        Err(WhatsAppError::Signature(error)) => {
            return Err(signature_failed(&state, CHANNEL, &error));
        }
        Err(error) => return Err(ApiError::Internal(error.to_string())),
    }
    let records = whatsapp::decode(&body, Utc::now()).map_err(|error| {
        reject(&state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    })?;
    let durable = make_durable(&state, records, meta).await?;
    Ok(HttpResponse::Ok().json(WebhookReceipt {
        items: durable.receipts,
    }))
}
