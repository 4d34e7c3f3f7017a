//! `POST /v1/webhooks/stripe`: payment events from Stripe.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::{TimeDelta, Utc};
use connectors::stripe::{self, StripeError};
use serde_json::json;

use super::whatsapp::WebhookReceipt;
use super::{REPLAYED, header, make_durable, rate_limit, reject, signature_failed};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request::read_body;
use crate::store::RequestMeta;

const CHANNEL: &str = stripe::SOURCE;

/// Stripe events, signed with `Stripe-Signature: t=…,v1=<hex HMAC-SHA256("{t}.{body}")>`
/// under `billing.stripe.webhook_secret` (tolerance `timestamp_tolerance_seconds`, 300 s).
///
/// `payment_intent.succeeded` records a payment (metadata `account_id`, `invoice_id` or
/// `invoice_number` place it) and `charge.refunded` refunds it; each event is durable in
/// the inbox before the 200, and a replayed event id answers as the first delivery did
/// (`Idempotent-Replayed: true`) without being processed twice. Other event types are
/// acknowledged and not kept.
#[utoipa::path(
    tag = "channels",
    request_body(content = Object, content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of {t}.{body}>")),
    responses(
        (status = 200, description = "the event is durable (or ignored)", body = WebhookReceipt),
        (status = 400, description = "not a Stripe event", body = crate::http::error::Problem),
        (status = 401, description = "signature missing, invalid or stale", body = crate::http::error::Problem),
        (status = 404, description = "Stripe is not configured", body = crate::http::error::Problem),
    )
)]
#[post("/v1/webhooks/stripe")]
pub async fn stripe_webhook(
    req: HttpRequest,
    payload: web::Payload,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&req, &state, CHANNEL)?;
    let config = &state.config.billing.stripe;
    if config.webhook_secret.is_empty() {
        return Err(ApiError::NotConfigured("the Stripe channel".into()));
    }
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let now = Utc::now();
    stripe::verify_signature(
        &config.webhook_secret,
        &body,
        header(&req, stripe::SIGNATURE_HEADER),
        now,
        TimeDelta::seconds(i64::from(config.timestamp_tolerance_seconds)),
    )
    .map_err(|error| signature_failed(&state, CHANNEL, &error))?;
    let malformed = |error: StripeError| {
        reject(&state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    };
    let Some(record) = stripe::decode(&body, now).map_err(malformed)? else {
        let kind = stripe::event_type(&body).unwrap_or_default();
        return Ok(HttpResponse::Ok().json(json!({"items": [], "ignored": kind})));
    };
    let durable = make_durable(&state, vec![record], meta).await?;
    let mut response = HttpResponse::Ok();
    if durable.replayed {
        response.insert_header((REPLAYED, "true"));
    }
    Ok(response.json(WebhookReceipt {
        items: durable.receipts,
    }))
}
