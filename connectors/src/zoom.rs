//! Zoom webhooks (meetings and webinars).
//!
//! * Endpoint validation: Zoom posts `{"event":"endpoint.url_validation","payload":
//!   {"plainToken":…}}` and expects `{"plainToken":…,"encryptedToken":hex(HMAC-SHA256(secret
//!   token, plainToken))}` back ([`url_validation_plain_token`], [`url_validation_response`]).
//! * Events carry `x-zm-request-timestamp` (Unix seconds) and `x-zm-signature: v0=<hex>` where
//!   the hex is HMAC-SHA256 of `v0:{timestamp}:{raw body}` ([`verify_signature`]).
//! * [`decode`] turns one event (`{"event","event_ts","payload":{"account_id","object"}}`) into
//!   one record: registrations carry the registrant, joins/leaves the participant, and the
//!   meeting or webinar becomes the campaign.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::signature::{self, SignatureError};
use crate::util::{put_json_scalar, put_str, scalar_to_string, text_at};
use crate::{Fields, Inbound};

pub const SOURCE: &str = "zoom";
pub const SIGNATURE_HEADER: &str = "x-zm-signature";
pub const TIMESTAMP_HEADER: &str = "x-zm-request-timestamp";
const SIGNATURE_PREFIX: &str = "v0=";
const URL_VALIDATION_EVENT: &str = "endpoint.url_validation";

/// Configuration of the Zoom channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoomConfig {
    /// The app's "Secret Token" (keys both validation and event signatures).
    pub secret_token: String,
    /// How far `x-zm-request-timestamp` may be from our clock.
    #[serde(default = "default_tolerance_seconds")]
    pub timestamp_tolerance_seconds: u32,
}

fn default_tolerance_seconds() -> u32 {
    300
}

impl ZoomConfig {
    pub fn tolerance(&self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.timestamp_tolerance_seconds))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZoomError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("body is not valid webhook JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("webhook has no \"{0}\"")]
    MissingField(&'static str),
    #[error("endpoint.url_validation is a handshake, not an event")]
    UrlValidationIsNotAnEvent,
}

/// The answer to an `endpoint.url_validation` request, serialised as Zoom expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlValidationResponse {
    pub plain_token: String,
    pub encrypted_token: String,
}

/// Builds the validation answer: `encryptedToken` is hex HMAC-SHA256 of the plain token.
pub fn url_validation_response(secret_token: &str, plain_token: &str) -> UrlValidationResponse {
    UrlValidationResponse {
        plain_token: plain_token.to_owned(),
        encrypted_token: signature::hmac_sha256_hex(
            secret_token.as_bytes(),
            &[plain_token.as_bytes()],
        ),
    }
}

/// `Some(plainToken)` when the body is an `endpoint.url_validation` request, `None` for events.
pub fn url_validation_plain_token(body: &[u8]) -> Result<Option<String>, ZoomError> {
    let value: Value = serde_json::from_slice(body)?;
    if value.get("event").and_then(Value::as_str) != Some(URL_VALIDATION_EVENT) {
        return Ok(None);
    }
    text_at(&value, &["payload", "plainToken"])
        .map(Some)
        .ok_or(ZoomError::MissingField("payload.plainToken"))
}

/// Verifies `x-zm-signature` over `v0:{timestamp}:{body}` and refuses timestamps further than
/// `tolerance` from `now`, so a captured request cannot be replayed later.
pub fn verify_signature(
    secret_token: &str,
    timestamp_header: Option<&str>,
    body: &[u8],
    signature_header: Option<&str>,
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<(), ZoomError> {
    let key = signature::require_secret(secret_token)?;
    let timestamp = signature::require_header(timestamp_header, TIMESTAMP_HEADER)?;
    let header = signature::require_header(signature_header, SIGNATURE_HEADER)?;
    let provided = signature::strip_prefix(header, SIGNATURE_PREFIX, SIGNATURE_HEADER)?;
    // Check the MAC first so an attacker cannot probe our clock with unsigned requests.
    let expected = signature::hmac_sha256(key, &[b"v0:", timestamp.as_bytes(), b":", body]);
    signature::verify_hex(&expected, provided, SIGNATURE_HEADER)?;
    signature::check_freshness(timestamp, TIMESTAMP_HEADER, now, tolerance)?;
    Ok(())
}

/// Decodes one event. Events other than registrations and joins/leaves are still decoded
/// (event name, campaign, ids) so nothing Zoom sends is lost.
pub fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Inbound, ZoomError> {
    let value: Value = serde_json::from_slice(body)?;
    let event = value
        .get("event")
        .and_then(Value::as_str)
        .ok_or(ZoomError::MissingField("event"))?;
    if event == URL_VALIDATION_EVENT {
        return Err(ZoomError::UrlValidationIsNotAnEvent);
    }
    let object = value
        .pointer("/payload/object")
        .ok_or(ZoomError::MissingField("payload.object"))?;

    let mut fields = Fields::new();
    put_str(&mut fields, "event", event);
    let (campaign_type, action) = event.split_once('.').unwrap_or((event, ""));
    put_str(&mut fields, "campaign_type", campaign_type);
    put_str(&mut fields, "kind", kind_of(action));
    put_json_scalar(&mut fields, "event_ts", value.get("event_ts"));
    put_json_scalar(
        &mut fields,
        "account_id",
        value.pointer("/payload/account_id"),
    );
    put_json_scalar(&mut fields, "campaign_id", object.get("id"));
    put_json_scalar(&mut fields, "campaign_uuid", object.get("uuid"));
    put_json_scalar(&mut fields, "campaign", object.get("topic"));
    put_json_scalar(&mut fields, "campaign_start_time", object.get("start_time"));
    put_json_scalar(&mut fields, "campaign_timezone", object.get("timezone"));
    put_json_scalar(&mut fields, "host_id", object.get("host_id"));

    let person_id = if let Some(registrant) = object.get("registrant") {
        put_person(&mut fields, registrant, "registrant_id");
        put_custom_questions(&mut fields, registrant);
        put_json_scalar(
            &mut fields,
            "tracking_source_name",
            registrant.pointer("/tracking_source/source_name"),
        );
        put_json_scalar(
            &mut fields,
            "tracking_url",
            registrant.pointer("/tracking_source/tracking_url"),
        );
        first_text(registrant, &["id", "email"])
    } else if let Some(participant) = object.get("participant") {
        put_person(&mut fields, participant, "participant_id");
        first_text(
            participant,
            &["participant_uuid", "id", "user_id", "email", "user_name"],
        )
    } else {
        None
    };
    put_occurred_at(&mut fields, &value);

    Ok(Inbound {
        source: SOURCE.to_owned(),
        external_id: Some(external_id(event, object, person_id.as_deref(), &value)),
        received_at,
        fields,
        raw: body.to_vec(),
    })
}

fn kind_of(action: &str) -> &str {
    match action {
        "registration_created" => "registration",
        "participant_joined" => "participant_joined",
        "participant_left" => "participant_left",
        other => other,
    }
}

/// Copies the person's scalar fields under their own names (email, first_name, join_time…);
/// `id` is renamed because the object also has one.
fn put_person(fields: &mut Fields, person: &Value, id_key: &str) {
    let Some(person) = person.as_object() else {
        return;
    };
    for (key, value) in person {
        let key = if key == "id" { id_key } else { key.as_str() };
        if let Some(text) = scalar_to_string(value) {
            put_str(fields, key, &text);
        }
    }
}

/// Registration form custom questions, both as `question:<title>` fields for mapping and as
/// the original list.
fn put_custom_questions(fields: &mut Fields, registrant: &Value) {
    let Some(questions) = registrant.get("custom_questions").and_then(Value::as_array) else {
        return;
    };
    for question in questions {
        if let (Some(title), Some(answer)) =
            (text_at(question, &["title"]), text_at(question, &["value"]))
        {
            put_str(fields, &format!("question:{}", title.trim()), &answer);
        }
    }
    if !questions.is_empty() {
        fields.insert("custom_questions".into(), Value::Array(questions.clone()));
    }
}

fn first_text(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|key| text_at(value, &[key]))
        .find(|text| !text.trim().is_empty())
}

/// The time the thing happened, preferring the person's own timestamps over delivery time.
fn put_occurred_at(fields: &mut Fields, value: &Value) {
    let from_person = ["leave_time", "join_time", "date_time"]
        .iter()
        .filter_map(|key| fields.get(*key).and_then(Value::as_str))
        .find_map(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc));
    let from_event = value
        .get("event_ts")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis);
    if let Some(at) = from_person.or(from_event) {
        fields.insert("occurred_at".into(), at.to_rfc3339().into());
    }
}

/// `event:object:person:event_ts`: Zoom retries resend the same body, so a replay maps to the
/// same id while a second join of the same person (new event_ts) does not.
fn external_id(event: &str, object: &Value, person_id: Option<&str>, value: &Value) -> String {
    let object_id = first_text(object, &["uuid", "id"]).unwrap_or_default();
    let event_ts = value
        .get("event_ts")
        .and_then(scalar_to_string)
        .unwrap_or_default();
    format!(
        "{event}:{object_id}:{}:{event_ts}",
        person_id.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "zoom-secret-token";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/zoom/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn sign(timestamp: &str, body: &[u8]) -> String {
        format!(
            "v0={}",
            signature::hmac_sha256_hex(
                SECRET.as_bytes(),
                &[format!("v0:{timestamp}:").as_bytes(), body]
            )
        )
    }

    fn field<'a>(record: &'a Inbound, key: &str) -> Option<&'a str> {
        record.fields.get(key).and_then(Value::as_str)
    }

    #[test]
    fn url_validation_round_trip() {
        let body = fixture("endpoint_url_validation.json");
        let plain = url_validation_plain_token(&body).ok().flatten();
        assert_eq!(plain.as_deref(), Some("qgg8vlvZRS6UYooatFL8Aw"));
        let response = url_validation_response(SECRET, "qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(
            response.encrypted_token,
            signature::hmac_sha256_hex(SECRET.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"])
        );
        let json = serde_json::to_value(&response).unwrap_or_default();
        assert_eq!(json["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(json["encryptedToken"].as_str().map(str::len), Some(64));
        assert!(matches!(
            decode(&body, now()),
            Err(ZoomError::UrlValidationIsNotAnEvent)
        ));
        let event = fixture("meeting_participant_joined.json");
        assert_eq!(url_validation_plain_token(&event).ok(), Some(None));
    }

    #[test]
    fn signature_good_bad_missing_and_stale() {
        let body = fixture("webinar_registration_created.json");
        let tolerance = TimeDelta::seconds(300);
        let timestamp = "1700000000";
        let good = sign(timestamp, &body);
        assert!(
            verify_signature(
                SECRET,
                Some(timestamp),
                &body,
                Some(&good),
                now(),
                tolerance
            )
            .is_ok()
        );
        assert!(matches!(
            verify_signature(
                "wrong",
                Some(timestamp),
                &body,
                Some(&good),
                now(),
                tolerance
            ),
            Err(ZoomError::Signature(SignatureError::Mismatch))
        ));
        // The timestamp is part of the signed string: changing it breaks the MAC.
        assert!(matches!(
            verify_signature(
                SECRET,
                Some("1700000001"),
                &body,
                Some(&good),
                now(),
                tolerance
            ),
            Err(ZoomError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature(SECRET, None, &body, Some(&good), now(), tolerance),
            Err(ZoomError::Signature(SignatureError::MissingHeader(
                TIMESTAMP_HEADER
            )))
        ));
        assert!(matches!(
            verify_signature(SECRET, Some(timestamp), &body, None, now(), tolerance),
            Err(ZoomError::Signature(SignatureError::MissingHeader(
                SIGNATURE_HEADER
            )))
        ));
        let stale = "1699990000";
        assert!(matches!(
            verify_signature(
                SECRET,
                Some(stale),
                &body,
                Some(&sign(stale, &body)),
                now(),
                tolerance
            ),
            Err(ZoomError::Signature(SignatureError::StaleTimestamp { .. }))
        ));
    }

    #[test]
    fn decodes_webinar_registration() {
        let record = decode(&fixture("webinar_registration_created.json"), now());
        let record = record.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(record.source, "zoom");
        assert_eq!(field(&record, "kind"), Some("registration"));
        assert_eq!(field(&record, "campaign_type"), Some("webinar"));
        assert_eq!(field(&record, "campaign"), Some("My Webinar"));
        assert_eq!(field(&record, "campaign_id"), Some("1234567890"));
        assert_eq!(field(&record, "email"), Some("jchill@example.com"));
        assert_eq!(field(&record, "first_name"), Some("Jill"));
        assert_eq!(field(&record, "last_name"), Some("Chill"));
        assert_eq!(field(&record, "org"), Some("Cooking Org"));
        assert_eq!(field(&record, "job_title"), Some("Chef"));
        assert_eq!(field(&record, "join_url"), Some("https://example.com"));
        assert_eq!(
            field(&record, "registrant_id"),
            Some("iFxeBPYun6SAiWUzBcEkX")
        );
        assert_eq!(field(&record, "tracking_source_name"), Some("general"));
        assert!(
            field(
                &record,
                "question:What do you hope to learn from this Webinar?"
            )
            .is_some_and(|answer| answer.starts_with("Look forward"))
        );
        assert_eq!(
            record.external_id.as_deref(),
            Some(
                "webinar.registration_created:4444AAAiAAAAAiAiAiiAii==:iFxeBPYun6SAiWUzBcEkX:1626230691572"
            )
        );
        assert_eq!(
            field(&record, "occurred_at"),
            Some("2021-07-14T02:44:51.572+00:00")
        );
    }

    #[test]
    fn decodes_meeting_join_and_leave_with_distinct_ids() {
        let joined = decode(&fixture("meeting_participant_joined.json"), now());
        let left = decode(&fixture("meeting_participant_left.json"), now());
        let (Ok(joined), Ok(left)) = (joined, left) else {
            panic!("fixtures must decode");
        };
        assert_eq!(field(&joined, "kind"), Some("participant_joined"));
        assert_eq!(field(&joined, "campaign_type"), Some("meeting"));
        assert_eq!(field(&joined, "user_name"), Some("Jill Chill"));
        assert_eq!(field(&joined, "email"), Some("jchill@example.com"));
        assert_eq!(
            field(&joined, "occurred_at"),
            Some("2021-07-13T21:44:51+00:00")
        );
        assert_eq!(field(&left, "kind"), Some("participant_left"));
        assert_eq!(field(&left, "leave_time"), Some("2021-07-13T22:50:51Z"));
        assert_eq!(
            field(&left, "occurred_at"),
            Some("2021-07-13T22:50:51+00:00")
        );
        assert_ne!(joined.external_id, left.external_id);

        let webinar = decode(&fixture("webinar_participant_joined.json"), now());
        let webinar = webinar.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(field(&webinar, "campaign_type"), Some("webinar"));
        assert_eq!(field(&webinar, "join_time"), Some("2021-07-13T21:44:51Z"));
    }

    #[test]
    fn replays_share_an_external_id() {
        let body = fixture("meeting_participant_joined.json");
        let first = decode(&body, now()).ok().and_then(|r| r.external_id);
        let replay = decode(&body, now() + TimeDelta::seconds(90))
            .ok()
            .and_then(|r| r.external_id);
        assert!(first.is_some());
        assert_eq!(first, replay);
    }

    #[test]
    fn bad_bodies_are_errors_and_unknown_events_decode() {
        let body = fixture("webinar_registration_created.json");
        assert!(matches!(
            decode(&body[..body.len() - 10], now()),
            Err(ZoomError::InvalidJson(_))
        ));
        assert!(matches!(
            decode(br#"{"payload":{}}"#, now()),
            Err(ZoomError::MissingField("event"))
        ));
        assert!(matches!(
            decode(br#"{"event":"meeting.started","payload":{}}"#, now()),
            Err(ZoomError::MissingField("payload.object"))
        ));
        let ended = decode(
            br#"{"event":"meeting.ended","event_ts":1,"payload":{"object":{"id":7,"topic":"T"}}}"#,
            now(),
        );
        let ended = ended.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(field(&ended, "kind"), Some("ended"));
        assert_eq!(ended.external_id.as_deref(), Some("meeting.ended:7::1"));
    }
}
