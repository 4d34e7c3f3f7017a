//! `POST /v1/leads/{id}/whatsapp`: send a lead a WhatsApp message (text or template).
//! The message is queued with its timeline activity in one transaction and sent by the
//! outbound sender; the activity's status follows it (`queued`, `accepted`, then the
//! status webhooks' `sent`, `delivered`, `read`, or `failed`).

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::request::{read_body, require_json};
use crate::domain::RecordKind;
use crate::outbound::whatsapp::{Language, Template, Text};
use crate::outbound::{Content, WHATSAPP};
use crate::pipeline::outbound_activity;
use crate::store::Change;
use crate::store::write::{apply, new_id};

/// What to send: exactly one of `text` and `template`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWhatsApp {
    /// Free-form text; Meta delivers it only within 24 hours of the person's last message.
    text: Option<String>,
    /// Let WhatsApp render a preview of the first URL in `text`.
    #[serde(default)]
    preview_url: bool,
    /// An approved message template.
    #[schema(value_type = Option<Object>)]
    template: Option<TemplateRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateRequest {
    name: String,
    /// Language code, `en_US` unless given.
    language: Option<String>,
    #[serde(default)]
    components: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageQueued {
    /// The outbound message activity on the lead's timeline.
    pub activity_id: String,
    pub status: String,
    /// The number it goes to (digits, as WhatsApp takes it).
    pub to: String,
}

/// Queue a WhatsApp message to a lead's phone number.
#[utoipa::path(
    tag = "records",
    params(("id" = String, Path, description = "the lead's id")),
    request_body(content = SendWhatsApp, content_type = "application/json"),
    responses(
        (status = 202, description = "queued; follow the activity's status", body = MessageQueued),
        (status = 400, description = "malformed JSON", body = super::error::Problem),
        (status = 404, description = "no such lead, or WhatsApp sending is not configured", body = super::error::Problem),
        (status = 422, description = "neither or both of text and template, or the lead has no phone", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/leads/{id}/whatsapp")]
pub async fn send_whatsapp(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Sending to a lead is an update of its timeline; the lead must be within reach.
    caller
        .reachable(
            crate::domain::RecordKind::Lead,
            &id,
            crate::access::Action::Update,
        )
        .await?;
    if state.config.whatsapp.client_config().is_none() {
        return Err(ApiError::NotConfigured("WhatsApp sending".into()));
    }
    require_json(&req)?;
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let request: SendWhatsApp = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("line {}, column {}: {e}", e.line(), e.column()))
    })?;
    let content = match (request.text, request.template) {
        (Some(text), None) if !text.trim().is_empty() => Content::Text {
            text: Text {
                body: text,
                preview_url: request.preview_url,
            },
        },
        (None, Some(template)) if !template.name.trim().is_empty() => Content::Template {
            template: Template {
                name: template.name,
                language: Language {
                    code: template.language.unwrap_or_else(|| "en_US".into()),
                },
                components: template.components,
            },
        },
        _ => {
            return Err(ApiError::Unprocessable(
                "give exactly one of a non-empty `text` and a `template` with a `name`".into(),
            ));
        }
    };
    let lead = state
        .store
        .get(RecordKind::Lead, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let to: String = lead
        .fields
        .get("phone")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if to.len() < 6 {
        return Err(ApiError::Unprocessable(
            "the lead has no phone number to send to".into(),
        ));
    }
    let ctx = caller.context("api");
    let activity_id = new_id();
    let mut tx = state.store.begin_write().await?;
    apply(
        &mut tx,
        &ctx,
        vec![Change::Insert {
            kind: RecordKind::Activity,
            id: Some(activity_id.clone()),
            fields: outbound_activity(&lead.id, &content, None, "api"),
        }],
    )
    .await?;
    crate::store::outbound::enqueue(&mut tx, WHATSAPP, &activity_id, &to, &json!(content)).await?;
    tx.commit().await?;
    Ok(HttpResponse::Accepted().json(MessageQueued {
        activity_id,
        status: "queued".into(),
        to,
    }))
}
