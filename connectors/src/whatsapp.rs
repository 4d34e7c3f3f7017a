//! Meta WhatsApp Cloud API webhooks.
//!
//! * `GET` with `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`: the subscription
//!   handshake, answered by echoing the challenge ([`verify_challenge`]).
//! * `POST` with a JSON body signed in `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
//!   raw body keyed with the app secret>` ([`verify_signature`]).
//!
//! The body is `{"object":"whatsapp_business_account","entry":[{"id":WABA,"changes":[{"field":
//! "messages","value":{metadata, contacts[], messages[], statuses[]}}]}]}`; [`decode`] yields
//! one [`Inbound`] per message and per status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::signature::{self, SignatureError};
use crate::util::{
    e164_from_digits, put_json_scalar, put_opt, put_str, text_at, unix_seconds_to_utc,
};
use crate::{Fields, Inbound};

/// The `source` of every WhatsApp record; the business number is in `phone_number_id`.
pub const SOURCE: &str = "whatsapp";
/// Header carrying the body signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
const SIGNATURE_PREFIX: &str = "sha256=";
const EXPECTED_OBJECT: &str = "whatsapp_business_account";

/// Configuration of the WhatsApp channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// The Meta app secret that keys `X-Hub-Signature-256`.
    pub app_secret: String,
    /// The token typed into the Meta dashboard, echoed back as `hub.verify_token`.
    pub verify_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WhatsAppError {
    #[error("hub.mode is {0:?}, expected \"subscribe\"")]
    UnexpectedMode(String),
    #[error("missing query parameter {0}")]
    MissingParameter(&'static str),
    #[error("hub.verify_token does not match")]
    VerifyTokenMismatch,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("body is not valid webhook JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("webhook object is {0:?}, expected \"whatsapp_business_account\"")]
    UnexpectedObject(String),
}

/// Answers the subscription handshake: returns the challenge to echo as the response body
/// when the mode is `subscribe` and the token matches (compared in constant time).
pub fn verify_challenge(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Result<String, WhatsAppError> {
    let mode = mode.ok_or(WhatsAppError::MissingParameter("hub.mode"))?;
    if mode != "subscribe" {
        return Err(WhatsAppError::UnexpectedMode(mode.to_owned()));
    }
    let token = token.ok_or(WhatsAppError::MissingParameter("hub.verify_token"))?;
    let challenge = challenge.ok_or(WhatsAppError::MissingParameter("hub.challenge"))?;
    if expected_token.is_empty()
        || !signature::constant_time_eq(token.as_bytes(), expected_token.as_bytes())
    {
        return Err(WhatsAppError::VerifyTokenMismatch);
    }
    Ok(challenge.to_owned())
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`) against the raw body.
pub fn verify_signature(
    app_secret: &str,
    body: &[u8],
    signature_header: Option<&str>,
) -> Result<(), WhatsAppError> {
    let key = signature::require_secret(app_secret)?;
    let header = signature::require_header(signature_header, SIGNATURE_HEADER)?;
    let provided = signature::strip_prefix(header, SIGNATURE_PREFIX, SIGNATURE_HEADER)?;
    let expected = signature::hmac_sha256(key, &[body]);
    signature::verify_hex(&expected, provided, SIGNATURE_HEADER)?;
    Ok(())
}

#[derive(Deserialize)]
struct Envelope {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    value: Value,
}

/// Decodes a webhook body into one record per message and per status. Changes of other
/// fields (account updates, template reviews) carry no lead data and yield nothing.
pub fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Inbound>, WhatsAppError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    if envelope.object != EXPECTED_OBJECT {
        return Err(WhatsAppError::UnexpectedObject(envelope.object));
    }
    let mut records = Vec::new();
    for entry in &envelope.entry {
        for change in &entry.changes {
            // Older payloads omit `field`; anything with messages/statuses is a message change.
            if change
                .field
                .as_deref()
                .is_some_and(|field| field != "messages")
            {
                continue;
            }
            let common = common_fields(entry.id.as_deref(), &change.value);
            for message in array_at(&change.value, "messages") {
                records.push(message_record(
                    &common,
                    &change.value,
                    message,
                    body,
                    received_at,
                ));
            }
            for status in array_at(&change.value, "statuses") {
                records.push(status_record(&common, status, body, received_at));
            }
        }
    }
    Ok(records)
}

fn array_at<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Fields every record of one change shares: which business number received it.
fn common_fields(business_account_id: Option<&str>, value: &Value) -> Fields {
    let mut fields = Fields::new();
    put_opt(&mut fields, "business_account_id", business_account_id);
    put_json_scalar(
        &mut fields,
        "phone_number_id",
        value.pointer("/metadata/phone_number_id"),
    );
    put_json_scalar(
        &mut fields,
        "display_phone_number",
        value.pointer("/metadata/display_phone_number"),
    );
    fields
}

fn message_record(
    common: &Fields,
    value: &Value,
    message: &Value,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Inbound {
    let mut fields = common.clone();
    fields.insert("kind".into(), "message".into());
    let wa_id = text_at(message, &["from"]).unwrap_or_default();
    put_str(&mut fields, "wa_id", &wa_id);
    put_opt(&mut fields, "phone", e164_from_digits(&wa_id).as_deref());
    put_opt(
        &mut fields,
        "profile_name",
        profile_name(value, &wa_id).as_deref(),
    );
    let message_id = text_at(message, &["id"]);
    put_opt(&mut fields, "message_id", message_id.as_deref());
    put_timestamp(&mut fields, message);

    let message_type = text_at(message, &["type"]).unwrap_or_else(|| "unknown".to_owned());
    put_str(&mut fields, "message_type", &message_type);
    if !put_content(&mut fields, &message_type, message) {
        // Keep what we do not understand so a later mapping can still use it.
        fields.insert("message_json".into(), message.to_string().into());
    }
    put_json_scalar(
        &mut fields,
        "context_message_id",
        message.pointer("/context/id"),
    );
    put_referral(&mut fields, message);
    put_first_error(&mut fields, message);

    Inbound {
        source: SOURCE.to_owned(),
        external_id: message_id,
        received_at,
        fields,
        raw: body.to_vec(),
    }
}

/// The sender's profile name: the contact whose `wa_id` matches `from`, else the only contact.
fn profile_name(value: &Value, wa_id: &str) -> Option<String> {
    let contacts = array_at(value, "contacts");
    contacts
        .iter()
        .find(|contact| text_at(contact, &["wa_id"]).as_deref() == Some(wa_id))
        .or_else(|| (contacts.len() == 1).then(|| &contacts[0]))
        .and_then(|contact| text_at(contact, &["profile", "name"]))
}

fn put_timestamp(fields: &mut Fields, item: &Value) {
    if let Some(timestamp) = text_at(item, &["timestamp"]) {
        put_str(fields, "timestamp", &timestamp);
        if let Some(occurred_at) = unix_seconds_to_utc(&timestamp) {
            fields.insert("occurred_at".into(), occurred_at.to_rfc3339().into());
        }
    }
}

/// Extracts the type-specific content; returns false for types this decoder does not know.
fn put_content(fields: &mut Fields, message_type: &str, message: &Value) -> bool {
    match message_type {
        "text" => put_json_scalar(fields, "text", message.pointer("/text/body")),
        "interactive" => {
            let interactive = message.get("interactive").unwrap_or(&Value::Null);
            let reply_kind = text_at(interactive, &["type"]).unwrap_or_default();
            put_str(fields, "interactive_type", &reply_kind);
            match interactive.get(&reply_kind) {
                Some(reply) if reply_kind == "button_reply" || reply_kind == "list_reply" => {
                    put_json_scalar(fields, "reply_id", reply.get("id"));
                    put_json_scalar(fields, "reply_title", reply.get("title"));
                    put_json_scalar(fields, "reply_description", reply.get("description"));
                    put_json_scalar(fields, "text", reply.get("title"));
                }
                // nfm_reply (flows) and future kinds: keep the structure.
                _ => {
                    fields.insert("interactive_json".into(), interactive.to_string().into());
                }
            }
        }
        "button" => {
            put_json_scalar(fields, "reply_id", message.pointer("/button/payload"));
            put_json_scalar(fields, "reply_title", message.pointer("/button/text"));
            put_json_scalar(fields, "text", message.pointer("/button/text"));
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            let media = message.get(message_type).unwrap_or(&Value::Null);
            put_json_scalar(fields, "media_id", media.get("id"));
            put_json_scalar(fields, "media_mime_type", media.get("mime_type"));
            put_json_scalar(fields, "media_filename", media.get("filename"));
            put_json_scalar(fields, "text", media.get("caption"));
        }
        "location" => {
            let location = message.get("location").unwrap_or(&Value::Null);
            put_json_scalar(fields, "latitude", location.get("latitude"));
            put_json_scalar(fields, "longitude", location.get("longitude"));
            put_json_scalar(fields, "location_name", location.get("name"));
            put_json_scalar(fields, "location_address", location.get("address"));
        }
        "reaction" => {
            put_json_scalar(fields, "text", message.pointer("/reaction/emoji"));
            put_json_scalar(
                fields,
                "context_message_id",
                message.pointer("/reaction/message_id"),
            );
        }
        "contacts" => {
            if let Some(shared) = message.get("contacts") {
                fields.insert("shared_contacts_json".into(), shared.to_string().into());
            }
        }
        // Carries only `errors`, which are copied for every message.
        "unsupported" => {}
        _ => return false,
    }
    true
}

/// Click-to-WhatsApp ad attribution: the most valuable lead-source data in the payload.
fn put_referral(fields: &mut Fields, message: &Value) {
    let Some(referral) = message.get("referral") else {
        return;
    };
    for key in [
        "source_url",
        "source_id",
        "source_type",
        "headline",
        "body",
        "ctwa_clid",
    ] {
        put_json_scalar(fields, &format!("referral_{key}"), referral.get(key));
    }
}

fn put_first_error(fields: &mut Fields, item: &Value) {
    let Some(error) = array_at(item, "errors").first() else {
        return;
    };
    put_json_scalar(fields, "error_code", error.get("code"));
    put_json_scalar(fields, "error_title", error.get("title"));
    put_json_scalar(fields, "error_message", error.get("message"));
    put_json_scalar(
        fields,
        "error_details",
        error.pointer("/error_data/details"),
    );
}

fn status_record(
    common: &Fields,
    status: &Value,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Inbound {
    let mut fields = common.clone();
    fields.insert("kind".into(), "status".into());
    let message_id = text_at(status, &["id"]);
    let state = text_at(status, &["status"]).unwrap_or_default();
    put_opt(&mut fields, "message_id", message_id.as_deref());
    put_str(&mut fields, "status", &state);
    let recipient_id = text_at(status, &["recipient_id"]).unwrap_or_default();
    put_str(&mut fields, "recipient_id", &recipient_id);
    let is_group = text_at(status, &["recipient_type"]).as_deref() == Some("group");
    if !is_group {
        put_str(&mut fields, "wa_id", &recipient_id);
        put_opt(
            &mut fields,
            "phone",
            e164_from_digits(&recipient_id).as_deref(),
        );
    }
    put_timestamp(&mut fields, status);
    put_json_scalar(
        &mut fields,
        "conversation_id",
        status.pointer("/conversation/id"),
    );
    put_json_scalar(
        &mut fields,
        "conversation_origin",
        status.pointer("/conversation/origin/type"),
    );
    put_json_scalar(
        &mut fields,
        "pricing_category",
        status.pointer("/pricing/category"),
    );
    put_json_scalar(
        &mut fields,
        "pricing_billable",
        status.pointer("/pricing/billable"),
    );
    put_json_scalar(
        &mut fields,
        "biz_opaque_callback_data",
        status.get("biz_opaque_callback_data"),
    );
    put_first_error(&mut fields, status);

    // One message goes sent → delivered → read: each transition is its own event.
    let external_id = message_id.map(|id| format!("{id}:{state}"));
    Inbound {
        source: SOURCE.to_owned(),
        external_id,
        received_at,
        fields,
        raw: body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_SECRET: &str = "app-secret";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap_or_default()
    }

    fn field<'a>(record: &'a Inbound, key: &str) -> Option<&'a str> {
        record.fields.get(key).and_then(Value::as_str)
    }

    #[test]
    fn challenge_is_echoed_for_subscribe_with_the_right_token() {
        let echoed = verify_challenge(
            Some("subscribe"),
            Some("meatyhamhock"),
            Some("1158201444"),
            "meatyhamhock",
        );
        assert_eq!(echoed.ok().as_deref(), Some("1158201444"));
    }

    #[test]
    fn challenge_is_refused_for_wrong_token_mode_or_missing_parameters() {
        assert!(matches!(
            verify_challenge(Some("subscribe"), Some("nope"), Some("1"), "meatyhamhock"),
            Err(WhatsAppError::VerifyTokenMismatch)
        ));
        assert!(matches!(
            verify_challenge(Some("unsubscribe"), Some("t"), Some("1"), "t"),
            Err(WhatsAppError::UnexpectedMode(_))
        ));
        assert!(matches!(
            verify_challenge(Some("subscribe"), None, Some("1"), "t"),
            Err(WhatsAppError::MissingParameter("hub.verify_token"))
        ));
        assert!(matches!(
            verify_challenge(None, Some("t"), Some("1"), "t"),
            Err(WhatsAppError::MissingParameter("hub.mode"))
        ));
        // An unconfigured token must not accept an empty one.
        assert!(matches!(
            verify_challenge(Some("subscribe"), Some(""), Some("1"), ""),
            Err(WhatsAppError::VerifyTokenMismatch)
        ));
    }

    #[test]
    fn signature_good_bad_and_missing() {
        let body = fixture("text_message.json");
        let good = format!(
            "sha256={}",
            signature::hmac_sha256_hex(APP_SECRET.as_bytes(), &[&body])
        );
        assert!(verify_signature(APP_SECRET, &body, Some(&good)).is_ok());

        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(matches!(
            verify_signature(APP_SECRET, &tampered, Some(&good)),
            Err(WhatsAppError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature("other-secret", &body, Some(&good)),
            Err(WhatsAppError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature(APP_SECRET, &body, None),
            Err(WhatsAppError::Signature(SignatureError::MissingHeader(_)))
        ));
        let sha1_scheme = good.replace("sha256=", "sha1=");
        assert!(matches!(
            verify_signature(APP_SECRET, &body, Some(&sha1_scheme)),
            Err(WhatsAppError::Signature(
                SignatureError::MalformedHeader { .. }
            ))
        ));
    }

    #[test]
    fn decodes_the_dashboard_test_text_message() {
        let records = decode(&fixture("text_message.json"), at()).unwrap_or_default();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.source, "whatsapp");
        assert_eq!(record.external_id.as_deref(), Some("ABGGFlA5Fpa"));
        assert_eq!(record.received_at, at());
        assert_eq!(field(record, "kind"), Some("message"));
        assert_eq!(field(record, "wa_id"), Some("16315551181"));
        assert_eq!(field(record, "phone"), Some("+16315551181"));
        assert_eq!(field(record, "profile_name"), Some("test user name"));
        assert_eq!(field(record, "message_type"), Some("text"));
        assert_eq!(field(record, "text"), Some("this is a text message"));
        assert_eq!(field(record, "timestamp"), Some("1504902988"));
        assert_eq!(
            field(record, "occurred_at"),
            Some("2017-09-08T20:36:28+00:00")
        );
        assert_eq!(field(record, "phone_number_id"), Some("123456123"));
        assert_eq!(field(record, "display_phone_number"), Some("16505551111"));
        assert_eq!(record.raw, fixture("text_message.json"));
    }

    #[test]
    fn decodes_button_and_list_replies_as_separate_records() {
        let records = decode(&fixture("interactive_replies.json"), at()).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert_eq!(field(&records[0], "message_type"), Some("interactive"));
        assert_eq!(field(&records[0], "interactive_type"), Some("button_reply"));
        assert_eq!(field(&records[0], "reply_id"), Some("change-button"));
        assert_eq!(field(&records[0], "reply_title"), Some("Change"));
        assert_eq!(field(&records[0], "profile_name"), Some("Sheena Nelson"));
        assert!(field(&records[0], "context_message_id").is_some());
        assert_eq!(field(&records[1], "reply_id"), Some("priority_express"));
        assert_eq!(field(&records[1], "reply_title"), Some("Express Shipping"));
        assert_eq!(
            field(&records[1], "reply_description"),
            Some("Next Day to 2 Days")
        );
        assert_ne!(records[0].external_id, records[1].external_id);
    }

    #[test]
    fn decodes_template_quick_reply_button() {
        let records = decode(&fixture("quick_reply_button.json"), at()).unwrap_or_default();
        assert_eq!(field(&records[0], "message_type"), Some("button"));
        assert_eq!(
            field(&records[0], "reply_id"),
            Some("Unsubscribe from Promos")
        );
        assert_eq!(field(&records[0], "text"), Some("Unsubscribe from Promos"));
    }

    #[test]
    fn decodes_media_and_ad_referral() {
        let image = decode(&fixture("image_message.json"), at()).unwrap_or_default();
        assert_eq!(field(&image[0], "message_type"), Some("image"));
        assert_eq!(field(&image[0], "media_id"), Some("1003383421387256"));
        assert_eq!(field(&image[0], "media_mime_type"), Some("image/jpeg"));
        assert_eq!(field(&image[0], "text"), Some("Black jacket"));

        let referral = decode(&fixture("ad_referral_message.json"), at()).unwrap_or_default();
        assert_eq!(field(&referral[0], "referral_source_type"), Some("ad"));
        assert_eq!(
            field(&referral[0], "referral_source_id"),
            Some("120226305854810726")
        );
        assert!(field(&referral[0], "referral_ctwa_clid").is_some());
        assert_eq!(
            field(&referral[0], "text"),
            Some("Can I get more info about this?")
        );
    }

    #[test]
    fn unsupported_and_unknown_types_are_decoded_not_refused() {
        let unsupported = decode(&fixture("unsupported_message.json"), at()).unwrap_or_default();
        assert_eq!(unsupported.len(), 1);
        assert_eq!(field(&unsupported[0], "message_type"), Some("unsupported"));
        assert_eq!(field(&unsupported[0], "error_code"), Some("131051"));
        assert_eq!(
            field(&unsupported[0], "error_details"),
            Some("Message type is currently not supported.")
        );

        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"9"},"messages":[{"from":"4915112345678","id":"wamid.X","timestamp":"1700000000","type":"hologram","hologram":{"depth":3}}]}}]}]}"#;
        let records = decode(body, at()).unwrap_or_default();
        assert_eq!(records.len(), 1);
        assert_eq!(field(&records[0], "kind"), Some("message"));
        assert_eq!(field(&records[0], "message_type"), Some("hologram"));
        assert_eq!(field(&records[0], "phone"), Some("+4915112345678"));
        let kept = field(&records[0], "message_json").unwrap_or_default();
        assert!(kept.contains("\"depth\":3"), "{kept}");
    }

    #[test]
    fn decodes_statuses_with_distinct_ids_per_transition() {
        let records = decode(&fixture("status_sent.json"), at()).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert_eq!(field(&records[0], "kind"), Some("status"));
        assert_eq!(field(&records[0], "status"), Some("sent"));
        assert_eq!(field(&records[0], "recipient_id"), Some("16505551234"));
        assert_eq!(field(&records[0], "phone"), Some("+16505551234"));
        assert_eq!(field(&records[0], "pricing_category"), Some("marketing"));
        assert_eq!(field(&records[0], "pricing_billable"), Some("true"));
        assert_eq!(
            records[0].external_id.as_deref(),
            Some("wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDNUZDQTNGMjVGQkUzNDdCRDMA:sent")
        );
        assert_eq!(field(&records[1], "status"), Some("read"));
        assert_ne!(records[0].external_id, records[1].external_id);

        let failed = decode(&fixture("status_failed.json"), at()).unwrap_or_default();
        assert_eq!(field(&failed[0], "status"), Some("failed"));
        assert_eq!(field(&failed[0], "error_code"), Some("131049"));
        assert!(field(&failed[0], "error_title").is_some());
    }

    #[test]
    fn bad_bodies_are_errors_and_other_fields_yield_nothing() {
        let body = fixture("text_message.json");
        assert!(matches!(
            decode(&body[..body.len() / 2], at()),
            Err(WhatsAppError::InvalidJson(_))
        ));
        assert!(matches!(
            decode(b"[]", at()),
            Err(WhatsAppError::InvalidJson(_))
        ));
        assert!(matches!(
            decode(br#"{"object":"page","entry":[]}"#, at()),
            Err(WhatsAppError::UnexpectedObject(_))
        ));
        let account_update = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]}]}"#;
        assert_eq!(decode(account_update, at()).map(|r| r.len()).ok(), Some(0));
        // Wrong shapes inside value are tolerated, not panics.
        let odd = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"messages":{"not":"an array"},"statuses":[42]}}]}]}"#;
        let records = decode(odd, at()).unwrap_or_default();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].external_id, None);
    }
}
