//! `POST /v1/inbound/email`: one raw RFC 5322 message, as an MTA hook (or a script) posts
//! it. Admin token. Every message that parses is stored as an inbound record of source
//! `email:inbound` with the Message-ID as external id, classified; the email mapping turns
//! only `lead` into a lead.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::{make_durable, media_type, reject};
use crate::access::{Action, INBOX};
use crate::http::AppState;
use crate::http::caller::Caller;
use crate::http::error::ApiError;
use crate::http::request::read_body;
use crate::mailbox::{HTTP_SOURCE, classification_name, email_record};

/// The channel label of refusals in `leadgate_inbound_rejected_total`.
const CHANNEL: &str = "email";

/// The answer to a posted message.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailReceipt {
    /// The inbound id (`GET /v1/inbound/{id}`).
    pub id: String,
    /// The Message-ID, or `sha256:<hex>` of the message without one.
    pub external_id: Option<String>,
    /// `lead`, `auto_reply`, `bounce`, `own_domain` or `no_sender`; only `lead` becomes a lead.
    pub classification: String,
    /// For a bounce: the recipients whose delivery failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bounce_recipients: Vec<String>,
}

/// Submit one raw email message (`message/rfc822` or `application/octet-stream`), at most
/// `email.max_message_bytes`. `202` once durable, whatever its classification; the same
/// Message-ID again answers the first record.
#[utoipa::path(
    tag = "channels",
    request_body(content = String, description = "one raw RFC 5322 message", content_type = "message/rfc822"),
    responses(
        (status = 202, description = "durable in the inbox", body = EmailReceipt),
        (status = 400, description = "empty or not a message", body = crate::http::error::Problem),
        (status = 401, description = "missing or invalid token", body = crate::http::error::Problem),
        (status = 403, description = "not an admin token", body = crate::http::error::Problem),
        (status = 413, description = "larger than email.max_message_bytes", body = crate::http::error::Problem),
        (status = 415, description = "not message/rfc822 or application/octet-stream", body = crate::http::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/inbound/email")]
pub async fn inbound_email(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Create).await?;
    let meta = caller.meta.clone();
    let media = media_type(&req);
    if media != "message/rfc822" && media != "application/octet-stream" {
        reject(&state, CHANNEL, "media_type");
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the raw message as message/rfc822 or application/octet-stream, not `{media}`"
        )));
    }
    let body = read_body(&req, payload, state.config.email.max_message_bytes).await?;
    let (record, classification) = email_record(
        HTTP_SOURCE,
        &body,
        &state.config.email.own_domains,
        Utc::now(),
    )
    .map_err(|error| {
        reject(&state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    })?;
    let durable = make_durable(&state, vec![record], meta).await?;
    let receipt = durable
        .receipts
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("no receipt for the message".into()))?;
    let bounce_recipients = match &classification {
        connectors::email::Classification::Bounce { recipients } => recipients.clone(),
        _ => Vec::new(),
    };
    Ok(HttpResponse::Accepted().json(EmailReceipt {
        id: receipt.id,
        external_id: receipt.external_id,
        classification: classification_name(&classification).to_owned(),
        bounce_recipients,
    }))
}
