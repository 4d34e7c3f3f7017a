//! The real-time channels' accept half: website forms, WhatsApp, telephony (CTI), Zoom and
//! posted email.
//!
//! Every handler reads the raw body under the size limit, verifies it (in constant time,
//! through the connectors), decodes it and makes the records durable in the inbox before it
//! answers 2xx. Refusals are counted in `leadgate_inbound_rejected_total{channel,reason}`.

pub mod cti;
pub mod email;
pub mod forms;
pub mod stripe;
pub mod whatsapp;
pub mod zoom;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use connectors::Inbound;
use connectors::signature::SignatureError;

use super::AppState;
use super::error::ApiError;
use crate::store::RequestMeta;
use crate::store::inbox::{Accepted, Receipt, Submission};

pub(super) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Counts one refused request.
pub(super) fn reject(state: &AppState, channel: &str, reason: &str) {
    state
        .metrics
        .inbound_rejected
        .with_label_values(&[channel, reason])
        .inc();
}

/// The metrics reason for a signature failure.
pub(super) fn signature_reason(error: &SignatureError) -> &'static str {
    match error {
        SignatureError::MissingHeader(_) => "missing_signature",
        SignatureError::StaleTimestamp { .. } => "stale_timestamp",
        SignatureError::EmptySecret => "not_configured",
        SignatureError::MalformedHeader { .. } | SignatureError::Mismatch => "bad_signature",
    }
}

/// Refuses the request with 401 after counting why.
pub(super) fn signature_failed(
    state: &AppState,
    channel: &str,
    error: &SignatureError,
) -> ApiError {
    tracing::info!(channel, %error, "webhook signature refused");
    reject(state, channel, signature_reason(error));
    ApiError::BadSignature
}

/// The per-IP rate limit of the public endpoints.
pub(super) fn rate_limit(
    req: &HttpRequest,
    state: &AppState,
    channel: &str,
) -> Result<(), ApiError> {
    let Some(peer) = req.peer_addr() else {
        return Ok(());
    };
    state.limiter.check(peer.ip()).map_err(|retry_after_secs| {
        reject(state, channel, "rate_limited");
        ApiError::TooManyRequests { retry_after_secs }
    })
}

/// What the inbox made of one request's records.
pub(super) struct Durable {
    pub receipts: Vec<Receipt>,
    /// Every record had been accepted before: the answer repeats the first one.
    pub replayed: bool,
}

/// Makes `items` durable (one group commit) and counts them; returns once committed.
pub(super) async fn make_durable(
    state: &AppState,
    items: Vec<Inbound>,
    meta: RequestMeta,
) -> Result<Durable, ApiError> {
    if items.is_empty() {
        return Ok(Durable {
            receipts: Vec::new(),
            replayed: false,
        });
    }
    let sources: Vec<String> = items.iter().map(|item| item.source.clone()).collect();
    let accepted = state
        .accepter
        .accept(Submission {
            items,
            meta,
            idempotency: None,
        })
        .await?;
    let receipts = match accepted {
        Accepted::New(receipts) | Accepted::Replayed(receipts) => receipts,
        Accepted::KeyReused => return Err(ApiError::Internal("idempotency key reused".into())),
    };
    for (receipt, source) in receipts.iter().zip(&sources) {
        let counter = if receipt.duplicate {
            &state.metrics.inbound_replayed
        } else {
            &state.metrics.inbound_accepted
        };
        counter.with_label_values(&[source]).inc();
    }
    let replayed = receipts.iter().all(|receipt| receipt.duplicate);
    Ok(Durable { receipts, replayed })
}

pub(super) fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The media type of the request without parameters, lower-cased.
pub(super) fn media_type(req: &HttpRequest) -> String {
    header(req, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
