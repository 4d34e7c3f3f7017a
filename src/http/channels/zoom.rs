//! `POST /v1/webhooks/zoom`: Zoom meeting and webinar events, and the endpoint validation.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use connectors::zoom::{self, ZoomError};

use super::whatsapp::WebhookReceipt;
use super::{header, make_durable, rate_limit, reject, signature_failed};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request::read_body;
use crate::store::RequestMeta;

const CHANNEL: &str = zoom::SOURCE;

/// Zoom events, signed with `x-zm-signature: v0=<hex HMAC-SHA256("v0:{ts}:{body}")>` and
/// `x-zm-request-timestamp`.
///
/// `endpoint.url_validation` is answered at once with `plainToken` and `encryptedToken`
/// (after the same signature check); every other event is stored, one record per event.
#[utoipa::path(
    tag = "channels",
    request_body(content = Object, content_type = "application/json"),
    params(
        ("x-zm-signature" = String, Header, description = "v0=<hex HMAC-SHA256 of v0:{timestamp}:{body}>"),
        ("x-zm-request-timestamp" = String, Header, description = "Unix seconds; refused outside the tolerance"),
    ),
    responses(
        (status = 200, description = "validation answer, or the event is durable", body = WebhookReceipt),
        (status = 400, description = "not a Zoom event", body = crate::http::error::Problem),
        (status = 401, description = "signature missing, invalid or stale", body = crate::http::error::Problem),
        (status = 404, description = "Zoom is not configured", body = crate::http::error::Problem),
        (status = 429, description = "rate limited", body = crate::http::error::Problem),
    )
)]
#[post("/v1/webhooks/zoom")]
pub async fn zoom_webhook(
    req: HttpRequest,
    payload: web::Payload,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&req, &state, CHANNEL)?;
    let config = &state.config.zoom;
    if config.secret_token.is_empty() {
        return Err(ApiError::NotConfigured("the Zoom channel".into()));
    }
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let now = Utc::now();
    match zoom::verify_signature(
        &config.secret_token,
        header(&req, zoom::TIMESTAMP_HEADER),
        &body,
        header(&req, zoom::SIGNATURE_HEADER),
        now,
        chrono::TimeDelta::seconds(i64::from(config.timestamp_tolerance_seconds)),
    ) {
        Ok(()) => {}
        Err(ZoomError::Signature(error)) => {
            return Err(signature_failed(&state, CHANNEL, &error));
        }
        Err(error) => return Err(ApiError::Internal(error.to_string())),
    }
    let malformed = |error: ZoomError| {
        reject(&state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    };
    if let Some(plain_token) = zoom::url_validation_plain_token(&body).map_err(malformed)? {
        return Ok(HttpResponse::Ok().json(zoom::url_validation_response(
            &config.secret_token,
            &plain_token,
        )));
    }
    let record = zoom::decode(&body, now).map_err(malformed)?;
    let durable = make_durable(&state, vec![record], meta).await?;
    Ok(HttpResponse::Ok().json(WebhookReceipt {
        items: durable.receipts,
    }))
}
