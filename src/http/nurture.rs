//! Nurturing endpoints: email templates, sequences and enrolments, sending one email to a
//! lead, the outbox state, the suppression list, provider webhooks (bounces and
//! complaints), and the public tracking endpoints: `/t/o/{token}` (open pixel),
//! `/t/c/{token}` (signed click redirect) and `/u/{token}` (unsubscribe; RFC 8058
//! one-click `POST`).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::request::read_body;
use crate::access::Action;
use crate::domain::RecordKind;
use crate::nurture::engagement::{self, Event};
use crate::nurture::sequences::{self, SequenceInput};
use crate::nurture::templates::{self, TemplateInput};
use crate::nurture::tracking::{PIXEL_GIF, Token, TrackingKey};
use crate::nurture::webhooks::{self, SnsKind, WebhookError, WebhookVerifiers};
use crate::nurture::{NurtureError, NurtureSection, outbox, suppression};
use crate::store::RequestMeta;

/// What the nurturing handlers share: the section, the tracking key, and the writer of
/// tracked fetches (which holds the score rules).
pub struct NurtureState {
    pub section: Arc<NurtureSection>,
    pub key: TrackingKey,
    pub events: engagement::EventWriter,
    pub webhooks: WebhookVerifiers,
}

/// The permission kind of templates, sequences, the outbox and suppressions.
const KIND: &str = "sequences";

impl From<NurtureError> for ApiError {
    fn from(error: NurtureError) -> Self {
        match error {
            NurtureError::Store(error) => error.into(),
            NurtureError::Invalid(why) => ApiError::Unprocessable(why),
            NurtureError::NotFound => ApiError::NotFound,
            NurtureError::Conflict(why) => ApiError::Conflict(why),
        }
    }
}

fn meta_of(req: &HttpRequest) -> RequestMeta {
    req.extensions()
        .get::<RequestMeta>()
        .cloned()
        .unwrap_or_default()
}

/// Save an email template (by name: saving an existing name replaces it).
#[utoipa::path(tag = "nurture", request_body = TemplateInput,
    responses((status = 201, body = templates::EmailTemplate),
              (status = 422, description = "unknown variable, missing text part, link to a host not allowed", body = super::error::Problem)),
    security(("bearer" = [])))]
#[post("/v1/email-templates")]
pub async fn save_template(
    body: web::Json<TemplateInput>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Create).await?;
    let saved = templates::save(&state.store, &state.nurture.section, &body).await?;
    Ok(HttpResponse::Created().json(saved))
}

#[utoipa::path(tag = "nurture", responses((status = 200, body = [templates::EmailTemplate])), security(("bearer" = [])))]
#[get("/v1/email-templates")]
pub async fn list_templates(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Read).await?;
    Ok(HttpResponse::Ok().json(templates::list(&state.store).await?))
}

/// Create a sequence.
#[utoipa::path(tag = "nurture", request_body = SequenceInput,
    responses((status = 201, body = sequences::Sequence),
              (status = 409, body = super::error::Problem),
              (status = 422, description = "unknown template, bad branch target, unknown rule field", body = super::error::Problem)),
    security(("bearer" = [])))]
#[post("/v1/sequences")]
pub async fn create_sequence(
    body: web::Json<SequenceInput>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Create).await?;
    let sequence = sequences::create(&state.store, &state.nurture.section, &body).await?;
    Ok(HttpResponse::Created().json(sequence))
}

#[utoipa::path(tag = "nurture", responses((status = 200, body = [sequences::Sequence])), security(("bearer" = [])))]
#[get("/v1/sequences")]
pub async fn list_sequences(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Read).await?;
    Ok(HttpResponse::Ok().json(sequences::list(&state.store).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SequenceDetail {
    pub sequence: sequences::Sequence,
    pub enrolments: Vec<sequences::Enrolment>,
}

#[utoipa::path(tag = "nurture", params(("id" = String, Path)),
    responses((status = 200, body = SequenceDetail), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
#[get("/v1/sequences/{id}")]
pub async fn get_sequence(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Read).await?;
    let sequence = sequences::get(&state.store, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let enrolments = sequences::enrolments(&state.store, &id).await?;
    Ok(HttpResponse::Ok().json(SequenceDetail {
        sequence,
        enrolments,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceChange {
    pub active: bool,
}

/// Turn a sequence off (its enrolments exit when next due) or on again.
#[utoipa::path(tag = "nurture", params(("id" = String, Path)), request_body = SequenceChange,
    responses((status = 200, body = sequences::Sequence), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
#[patch("/v1/sequences/{id}")]
pub async fn update_sequence(
    id: web::Path<String>,
    body: web::Json<SequenceChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Create).await?;
    if !sequences::set_active(&state.store, &id, body.active).await? {
        return Err(ApiError::NotFound);
    }
    let sequence = sequences::get(&state.store, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(sequence))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub lead_id: String,
}

/// Enrol a lead by hand.
#[utoipa::path(tag = "nurture", params(("id" = String, Path)), request_body = EnrolRequest,
    responses((status = 201, description = "enrolled"), (status = 404, body = super::error::Problem),
              (status = 409, description = "already enrolled", body = super::error::Problem)),
    security(("bearer" = [])))]
#[post("/v1/sequences/{id}/enrolments")]
pub async fn enrol_lead(
    id: web::Path<String>,
    body: web::Json<EnrolRequest>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Update).await?;
    caller
        .reachable(RecordKind::Lead, &body.lead_id, Action::Update)
        .await?;
    sequences::get(&state.store, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    match sequences::enrol(&state.store, &id, &body.lead_id).await? {
        Some(enrolment_id) => Ok(HttpResponse::Created().json(json!({"id": enrolment_id}))),
        None => Err(ApiError::Conflict(
            "the lead is (or was) enrolled in this sequence".into(),
        )),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEmail {
    /// The template's name.
    pub template: String,
    /// The sending identity; `nurture.from` when absent.
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailQueued {
    pub outbox_id: String,
    pub status: String,
}

/// Send one template to a lead now (through the outbox).
#[utoipa::path(tag = "nurture", params(("id" = String, Path, description = "the lead's id")),
    request_body = SendEmail,
    responses((status = 202, body = EmailQueued), (status = 404, body = super::error::Problem),
              (status = 409, description = "the address is suppressed", body = super::error::Problem),
              (status = 422, description = "no such template, or the lead has no email", body = super::error::Problem)),
    security(("bearer" = [])))]
#[post("/v1/leads/{id}/email")]
pub async fn send_email(
    id: web::Path<String>,
    body: web::Json<SendEmail>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let lead = caller
        .reachable(RecordKind::Lead, &id, Action::Update)
        .await?;
    let template = templates::by_name(&state.store, &body.template)
        .await?
        .ok_or_else(|| ApiError::Unprocessable(format!("no email template `{}`", body.template)))?;
    if let Some(email) = lead.fields.get("email").and_then(Value::as_str)
        && let Some(reason) = suppression::reason(&state.store, email).await?
    {
        return Err(ApiError::Conflict(format!(
            "{email} is on the suppression list ({reason})"
        )));
    }
    let section = &state.nurture.section;
    let from = body
        .from
        .clone()
        .filter(|f| f.contains('@'))
        .unwrap_or_else(|| section.from.clone());
    let mut tx = state.store.begin_write().await?;
    let outbox_id = outbox::enqueue_template(
        &mut tx,
        &caller.context("api"),
        section,
        &state.nurture.key,
        &lead,
        &template,
        &from,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Accepted().json(EmailQueued {
        outbox_id,
        status: "queued".into(),
    }))
}

#[utoipa::path(tag = "nurture", params(("id" = String, Path)),
    responses((status = 200, body = outbox::OutboxState), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
#[get("/v1/email-outbox/{id}")]
pub async fn outbox_state(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Read).await?;
    let found = outbox::state(&state.store, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Suppress {
    pub email: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Add an address to the suppression list.
#[utoipa::path(tag = "nurture", request_body = Suppress, responses((status = 204)), security(("bearer" = [])))]
#[post("/v1/suppressions")]
pub async fn add_suppression(
    body: web::Json<Suppress>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Create).await?;
    if !body.email.contains('@') {
        return Err(ApiError::Unprocessable("`email` is not an address".into()));
    }
    let reason = body.reason.clone().unwrap_or_else(|| "manual".into());
    suppression::suppress(&state.store, &body.email, &reason, &caller.actor()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(tag = "nurture", params(("email" = String, Path)),
    responses((status = 200, description = "`{email, reason}`"), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
#[get("/v1/suppressions/{email}")]
pub async fn get_suppression(
    email: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Read).await?;
    let reason = suppression::reason(&state.store, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(json!({"email": email.to_lowercase(), "reason": reason})))
}

#[utoipa::path(tag = "nurture", params(("email" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::Problem)), security(("bearer" = [])))]
#[delete("/v1/suppressions/{email}")]
pub async fn delete_suppression(
    email: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KIND, Action::Delete).await?;
    if suppression::remove(&state.store, &email).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

fn count_event(state: &AppState, event: &str, counted: bool) {
    state
        .metrics
        .email_events
        .with_label_values(&[event, if counted { "yes" } else { "no" }])
        .inc();
}

fn pixel() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/gif")
        .insert_header((
            header::CACHE_CONTROL,
            "no-store, no-cache, must-revalidate, private",
        ))
        .body(PIXEL_GIF)
}

/// Open pixel: a transparent GIF; the open is recorded (flagged when a scanner's).
#[utoipa::path(tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "image/gif"), (status = 400, description = "tampered token", body = super::error::Problem)))]
#[get("/t/o/{token}")]
pub async fn open_pixel(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(Token::Open { outbox_id }) = state.nurture.key.verify(&token) else {
        return Err(ApiError::BadRequest("invalid tracking token".into()));
    };
    let fetch = engagement::Fetch {
        outbox_id,
        event: Event::Open,
        url: None,
        meta: meta_of(&req),
    };
    match state.nurture.events.record(fetch).await {
        Ok(counted) => count_event(&state, "open", counted),
        // The pixel is answered regardless: a recipient never sees a broken image.
        Err(error) => tracing::warn!(%error, "open not recorded"),
    }
    Ok(pixel())
}

/// Click redirect: 302 to the signed URL when its host is allowed.
#[utoipa::path(tag = "tracking", params(("token" = String, Path)),
    responses((status = 302, description = "to the link's target"),
              (status = 400, description = "tampered token", body = super::error::Problem),
              (status = 403, description = "target host not on nurture.redirect_allow_hosts", body = super::error::Problem)))]
#[get("/t/c/{token}")]
pub async fn click_redirect(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(Token::Click { outbox_id, url }) = state.nurture.key.verify(&token) else {
        return Err(ApiError::BadRequest("invalid or tampered link".into()));
    };
    let nurture = &state.nurture;
    let allowed = crate::nurture::config::url_host(&url)
        .is_some_and(|host| nurture.section.host_allowed(&host));
    if !allowed {
        return Err(ApiError::Forbidden(
            "the link's host is not on the redirect allow-list".into(),
        ));
    }
    let fetch = engagement::Fetch {
        outbox_id,
        event: Event::Click,
        url: Some(url.clone()),
        meta: meta_of(&req),
    };
    match nurture.events.record(fetch).await {
        Ok(counted) => count_event(&state, "click", counted),
        Err(error) => tracing::warn!(%error, "click not recorded"),
    }
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

fn unsubscribe_outbox(state: &AppState, token: &str) -> Result<String, ApiError> {
    match state.nurture.key.verify(token) {
        Some(Token::Unsubscribe { outbox_id }) => Ok(outbox_id),
        _ => Err(ApiError::BadRequest("invalid unsubscribe link".into())),
    }
}

/// The unsubscribe page: a GET never unsubscribes (scanners follow links), its button
/// posts back.
#[utoipa::path(tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "text/html page with the unsubscribe button"),
              (status = 400, body = super::error::Problem)))]
#[get("/u/{token}")]
pub async fn unsubscribe_page(
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    unsubscribe_outbox(&state, &token)?;
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"/u/{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Stop receiving these emails?</p><button type=\"submit\">Unsubscribe</button>\
         </form></body></html>",
        token = templates::escape_html(&token)
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page))
}

/// Unsubscribe: RFC 8058 one-click (`List-Unsubscribe=One-Click`) or the page's button.
#[utoipa::path(tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "unsubscribed"), (status = 400, body = super::error::Problem)))]
#[post("/u/{token}")]
pub async fn unsubscribe(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let outbox_id = unsubscribe_outbox(&state, &token)?;
    let email = engagement::unsubscribe(&state.store, &outbox_id, &meta_of(&req))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><body><p>{} will get no more of these emails.</p></body></html>",
            templates::escape_html(&email)
        )))
}

#[derive(Debug, Deserialize)]
pub struct WebhookQuery {
    token: Option<String>,
}

/// Addresses a provider's event payload reports as hard-bounced or complained about.
pub fn provider_events(provider: &str, body: &Value) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    let mut push = |email: Option<&str>, reason: &'static str| {
        if let Some(email) = email.filter(|e| e.contains('@')) {
            found.push((email.trim().to_lowercase(), reason));
        }
    };
    match provider {
        // SendGrid's Event Webhook: an array of events.
        "sendgrid" => {
            for event in body.as_array().into_iter().flatten() {
                let email = event.get("email").and_then(Value::as_str);
                match event.get("event").and_then(Value::as_str) {
                    Some("bounce")
                        if event.get("type").and_then(Value::as_str) != Some("blocked") =>
                    {
                        push(email, "bounced")
                    }
                    Some("spamreport") => push(email, "complained"),
                    _ => {}
                }
            }
        }
        // Mailgun's webhooks: `{"signature": …, "event-data": {…}}`.
        "mailgun" => {
            let data = body.get("event-data").unwrap_or(body);
            let email = data.get("recipient").and_then(Value::as_str);
            match data.get("event").and_then(Value::as_str) {
                Some("failed")
                    if data.get("severity").and_then(Value::as_str) == Some("permanent") =>
                {
                    push(email, "bounced")
                }
                Some("complained") => push(email, "complained"),
                _ => {}
            }
        }
        // SES through SNS: the notification's `Message` is the JSON event.
        "ses" => {
            let inner: Value = body
                .get("Message")
                .and_then(Value::as_str)
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_else(|| body.clone());
            let kind = inner
                .get("notificationType")
                .or_else(|| inner.get("eventType"))
                .and_then(Value::as_str);
            match kind {
                Some("Bounce")
                    if inner.pointer("/bounce/bounceType").and_then(Value::as_str)
                        == Some("Permanent") =>
                {
                    for r in inner
                        .pointer("/bounce/bouncedRecipients")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        push(r.get("emailAddress").and_then(Value::as_str), "bounced");
                    }
                }
                Some("Complaint") => {
                    for r in inner
                        .pointer("/complaint/complainedRecipients")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        push(r.get("emailAddress").and_then(Value::as_str), "complained");
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    found
}

/// A refused webhook as an answer: a failed check is `401`, SNS out of reach `503` (SNS
/// delivers again), a body that is no event `400`.
fn webhook_refused(provider: &str, error: WebhookError) -> ApiError {
    match error {
        WebhookError::Store(error) => error.into(),
        WebhookError::Malformed(why) => ApiError::BadRequest(why),
        WebhookError::Unreachable(why) => {
            tracing::warn!(provider, %why, "SNS not reached; the message is not taken");
            ApiError::Unavailable(why)
        }
        other => {
            tracing::info!(provider, error = %other, "email webhook refused");
            ApiError::BadSignature
        }
    }
}

/// Provider event webhooks (`sendgrid`, `mailgun`, `ses`): hard bounces and complaints
/// suppress the address and end its leads' sequences. Each is checked by the provider's
/// own signature (see the README); `?token=` is required too when `webhook_token` is set.
/// The suppressions are durable before the `200`.
#[utoipa::path(tag = "nurture", params(("provider" = String, Path), ("token" = Option<String>, Query)),
    responses((status = 200, description = "`{suppressed: n}`; an SNS subscription confirmed: `{confirmed: true}`"),
              (status = 400, description = "not an event", body = super::error::Problem),
              (status = 401, description = "signature missing, invalid, stale or replayed; unknown SNS topic", body = super::error::Problem),
              (status = 404, description = "unknown provider, or its signature check not configured", body = super::error::Problem),
              (status = 503, description = "SNS signing certificate not reachable", body = super::error::Problem)))]
#[post("/v1/webhooks/email/{provider}")]
pub async fn provider_webhook(
    req: HttpRequest,
    provider: web::Path<String>,
    query: web::Query<WebhookQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let nurture = &state.nurture;
    let verifiers = &nurture.webhooks;
    let provider = provider.as_str();
    let configured = match provider {
        "mailgun" => verifiers.mailgun.is_some(),
        "sendgrid" => verifiers.sendgrid.is_some(),
        "ses" => verifiers.sns.is_some(),
        _ => return Err(ApiError::NotFound),
    };
    if !configured {
        return Err(ApiError::NotConfigured(format!("the {provider} webhook")));
    }
    let expected = &nurture.section.webhook_token;
    if !expected.is_empty() {
        let given = query.token.as_deref().unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::Unauthorized);
        }
    }
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let now = chrono::Utc::now();
    let tolerance = i64::try_from(nurture.section.webhook_tolerance_secs).unwrap_or(i64::MAX);
    let refused = |error: WebhookError| webhook_refused(provider, error);
    let parse = |bytes: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("not JSON: {e}")))
    };
    let header_value = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut mailgun_token = None;
    let events = match (
        provider,
        &verifiers.mailgun,
        &verifiers.sendgrid,
        &verifiers.sns,
    ) {
        ("mailgun", Some(key), _, _) => {
            let json = parse(&body)?;
            mailgun_token =
                Some(webhooks::verify_mailgun(key, &json, now, tolerance).map_err(refused)?);
            json
        }
        ("sendgrid", _, Some(key), _) => {
            webhooks::verify_sendgrid(
                key,
                header_value(webhooks::SENDGRID_TIMESTAMP),
                header_value(webhooks::SENDGRID_SIGNATURE),
                &body,
                now,
                tolerance,
            )
            .map_err(refused)?;
            parse(&body)?
        }
        ("ses", _, _, Some(sns)) => {
            // SNS posts JSON as text/plain, so the body is read whatever its type.
            let message = sns.verify(&body).await.map_err(refused)?;
            match message.kind {
                SnsKind::SubscriptionConfirmation => {
                    let url = message
                        .subscribe_url
                        .as_deref()
                        .ok_or(WebhookError::Missing("SubscribeURL"))
                        .map_err(refused)?;
                    sns.confirm(url).await.map_err(refused)?;
                    tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
                    return Ok(HttpResponse::Ok().json(json!({"confirmed": true})));
                }
                SnsKind::UnsubscribeConfirmation => {
                    tracing::warn!(topic = %message.topic_arn, "SNS subscription ended");
                    return Ok(HttpResponse::Ok().json(json!({"suppressed": 0})));
                }
                SnsKind::Notification => json!({"Message": message.message}),
            }
        }
        _ => return Err(ApiError::NotFound),
    };
    let events = provider_events(provider, &events);
    let mut tx = state.store.begin_write().await?;
    if let Some(token) = &mailgun_token {
        let used = webhooks::spend_token(&mut tx, provider, token, &body, now, tolerance)
            .await
            .map_err(refused)?;
        if used == webhooks::TokenUse::Again {
            // A redelivery of what was kept: acknowledged, not processed twice.
            return Ok(HttpResponse::Ok()
                .insert_header(("Idempotent-Replayed", "true"))
                .json(json!({"suppressed": 0})));
        }
    }
    for (email, reason) in &events {
        suppression::suppress_in(&mut tx, email, reason, provider).await?;
        let leads: Vec<String> = sqlx::query_scalar("SELECT id FROM leads WHERE email = $1")
            .bind(email)
            .fetch_all(&mut *tx)
            .await
            .map_err(crate::store::StoreError::from)?;
        for lead in leads {
            sequences::exit_all_in(&mut tx, &lead, reason).await?;
        }
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({"suppressed": events.len()})))
}
