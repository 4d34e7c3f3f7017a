//! `POST /v1/webhooks/cti/{provider}`: call events from Twilio (form-encoded, signed with
//! `X-Twilio-Signature`) and from any PBX speaking leadgate's generic JSON format. A `ringing`
//! event is answered with a screen pop: who is calling, when the number is known.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::{TimeDelta, Utc};
use connectors::{Inbound, cti_generic, twilio};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{header, make_durable, rate_limit, reject, signature_failed};
use crate::domain::RecordKind;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::request::read_body;
use crate::store::RequestMeta;
use crate::store::inbox::Receipt;
use crate::store::read::Record;

/// The answer to a `ringing` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScreenPop {
    /// The inbound record of this event.
    pub inbound_id: String,
    /// The lead or contact with the caller's number; `null` for an unknown caller.
    #[serde(rename = "match")]
    pub matched: Option<Caller>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Caller {
    /// `lead` or `contact`.
    pub kind: String,
    pub id: String,
    pub name: String,
    pub company: Option<String>,
    pub email: Option<String>,
    pub owner_id: Option<String>,
    /// The caller's number in E.164.
    pub phone: String,
    /// The newest activity on the record's timeline.
    #[schema(value_type = Option<Object>)]
    pub last_activity: Option<Map<String, Value>>,
}

/// A call event. `twilio`: a Voice status callback; `generic`: leadgate's JSON call event
/// (see the README). `ringing` answers `200` with a screen pop; other events `202`.
#[utoipa::path(
    tag = "channels",
    params(("provider" = String, Path, description = "`twilio` or `generic`")),
    request_body(content = Object, description = "Twilio form parameters, or a generic call event (JSON)"),
    responses(
        (status = 200, description = "ringing: durable, and the caller if known", body = ScreenPop),
        (status = 202, description = "durable in the inbox", body = Receipt),
        (status = 400, description = "not a call event", body = crate::http::error::Problem),
        (status = 401, description = "signature missing, invalid or stale", body = crate::http::error::Problem),
        (status = 404, description = "unknown or unconfigured provider", body = crate::http::error::Problem),
        (status = 429, description = "rate limited", body = crate::http::error::Problem),
    )
)]
#[post("/v1/webhooks/cti/{provider}")]
pub async fn cti_webhook(
    req: HttpRequest,
    provider: web::Path<String>,
    payload: web::Payload,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    rate_limit(&req, &state, "cti")?;
    let record = match provider.as_str() {
        "twilio" => twilio_event(&req, payload, &state).await?,
        "generic" => generic_event(&req, payload, &state).await?,
        _ => {
            reject(&state, "cti", "unknown_provider");
            return Err(ApiError::NotFound);
        }
    };
    let ringing = record.fields.get("event").and_then(Value::as_str) == Some("ringing");
    let caller_phone = ["customer_phone", "from"]
        .iter()
        .find_map(|key| record.fields.get(*key).and_then(Value::as_str))
        .map(str::to_owned);
    let durable = make_durable(&state, vec![record], meta).await?;
    let receipt = durable
        .receipts
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("no receipt for the call event".into()))?;
    if !ringing {
        return Ok(HttpResponse::Accepted().json(receipt));
    }
    let matched = match caller_phone {
        Some(phone) => find_caller(&state, &phone).await?,
        None => None,
    };
    Ok(HttpResponse::Ok().json(ScreenPop {
        inbound_id: receipt.id,
        matched,
    }))
}

async fn twilio_event(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Inbound, ApiError> {
    const CHANNEL: &str = twilio::DEFAULT_SOURCE;
    let config = &state.config.cti.twilio;
    if config.auth_token.is_empty() || config.public_base_url.is_empty() {
        return Err(ApiError::NotConfigured("the Twilio channel".into()));
    }
    let body = read_body(req, payload, state.config.max_body_bytes).await?;
    let params = twilio::parse_form(&body);
    // Twilio signs the URL it called: our public base plus the path and query it used.
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    let url = format!("{}{path}", config.public_base_url.trim_end_matches('/'));
    match twilio::verify_signature(
        &config.auth_token,
        &url,
        &params,
        header(req, twilio::SIGNATURE_HEADER),
    ) {
        Ok(()) => {}
        Err(twilio::TwilioError::Signature(error)) => {
            return Err(signature_failed(state, CHANNEL, &error));
        }
        Err(error) => return Err(ApiError::Internal(error.to_string())),
    }
    twilio::decode(CHANNEL, &params, &body, Utc::now()).map_err(|error| {
        reject(state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    })
}

async fn generic_event(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Inbound, ApiError> {
    const CHANNEL: &str = cti_generic::DEFAULT_SOURCE;
    let config = &state.config.cti.generic;
    if config.secret.is_empty() {
        return Err(ApiError::NotConfigured("the generic CTI channel".into()));
    }
    let body = read_body(req, payload, state.config.max_body_bytes).await?;
    let now = Utc::now();
    match cti_generic::verify_signature(
        &config.secret,
        header(req, cti_generic::TIMESTAMP_HEADER),
        &body,
        header(req, cti_generic::SIGNATURE_HEADER),
        now,
        TimeDelta::seconds(i64::from(config.timestamp_tolerance_seconds)),
    ) {
        Ok(()) => {}
        Err(cti_generic::CtiError::Signature(error)) => {
            return Err(signature_failed(state, CHANNEL, &error));
        }
        Err(error) => return Err(ApiError::Internal(error.to_string())),
    }
    cti_generic::decode(CHANNEL, &body, now).map_err(|error| {
        reject(state, CHANNEL, "malformed");
        ApiError::BadRequest(error.to_string())
    })
}

/// The lead, else the contact, whose phone is the caller's number in E.164.
async fn find_caller(state: &AppState, raw_phone: &str) -> Result<Option<Caller>, ApiError> {
    let Ok(phone) = matching::normalise::normalise_phone(raw_phone, &state.config.default_region)
    else {
        return Ok(None);
    };
    let lookups = [
        (RecordKind::Lead, "phone"),
        (RecordKind::Contact, "phone"),
        (RecordKind::Contact, "mobile_phone"),
    ];
    for (kind, field) in lookups {
        if let Some(record) = state
            .store
            .find_by(kind, field, &phone, 1)
            .await?
            .into_iter()
            .next()
        {
            let last_activity = state
                .store
                .timeline(kind, &record.id, 1)
                .await?
                .into_iter()
                .next()
                .map(activity_summary);
            return Ok(Some(caller(kind, record, phone, last_activity)));
        }
    }
    Ok(None)
}

fn text(record: &Record, field: &str) -> Option<String> {
    record
        .fields
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn caller(
    kind: RecordKind,
    record: Record,
    phone: String,
    last_activity: Option<Map<String, Value>>,
) -> Caller {
    let name = [text(&record, "first_name"), text(&record, "last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Caller {
        kind: if kind == RecordKind::Lead {
            "lead"
        } else {
            "contact"
        }
        .to_owned(),
        name,
        company: text(&record, "company"),
        email: text(&record, "email"),
        owner_id: text(&record, "owner_id"),
        phone,
        last_activity,
        id: record.id,
    }
}

fn activity_summary(activity: Record) -> Map<String, Value> {
    let mut summary = Map::new();
    summary.insert("id".into(), activity.id.clone().into());
    for field in [
        "activity_type",
        "subject",
        "channel",
        "direction",
        "occurred_at",
    ] {
        if let Some(value) = activity.fields.get(field).filter(|v| !v.is_null()) {
            summary.insert(field.into(), value.clone());
        }
    }
    summary
}
