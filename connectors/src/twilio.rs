//! Twilio Voice status callbacks (`application/x-www-form-urlencoded` POSTs).
//!
//! Signature (Twilio "Webhooks security"): `X-Twilio-Signature` is
//! `base64(HMAC-SHA1(auth token, full URL + concat(sorted(key + value))))`, where the URL is
//! exactly the one configured in Twilio, query string included, and the POST parameters are
//! sorted by name. The JSON-body variant (`bodySHA256`) is not used by voice callbacks.
//!
//! [`decode`] keeps every parameter under Twilio's own name (`CallSid`, `CallStatus`…) and adds
//! the neutral call vocabulary of [`crate::cti_generic`] (`call_id`, `event`, `from`, `to`,
//! `direction`, `duration_seconds`, `recording_url`, `caller_name`, `customer_phone`,
//! `occurred_at`) so one mapping serves every telephony source.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signature::{self, SignatureError};
use crate::util::{put_opt, put_str};
use crate::{Fields, Inbound};

pub const DEFAULT_SOURCE: &str = "cti:twilio";
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Configuration of one Twilio account's callbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub auth_token: String,
    /// The public callback URL as configured in Twilio; behind a proxy the URL we see differs
    /// from the one Twilio signed, so it is configured rather than reconstructed.
    pub callback_url: String,
    #[serde(default = "default_source")]
    pub source: String,
}

fn default_source() -> String {
    DEFAULT_SOURCE.to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
}

/// Parses a form body into ordered pairs, keeping repeated keys (they are all signed).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The signature Twilio would send for this URL and these parameters.
pub fn expected_signature(auth_token: &str, full_url: &str, params: &[(String, String)]) -> String {
    signature::hmac_sha1_base64(
        auth_token.as_bytes(),
        &[signed_string(full_url, params).as_bytes()],
    )
}

/// Verifies `X-Twilio-Signature` for a form-encoded callback.
pub fn verify_signature(
    auth_token: &str,
    full_url: &str,
    params: &[(String, String)],
    signature_header: Option<&str>,
) -> Result<(), TwilioError> {
    signature::require_secret(auth_token)?;
    let provided = signature::require_header(signature_header, SIGNATURE_HEADER)?;
    let expected = signature::hmac_sha1(
        auth_token.as_bytes(),
        &[signed_string(full_url, params).as_bytes()],
    );
    signature::verify_base64(&expected, provided, SIGNATURE_HEADER)?;
    Ok(())
}

/// The URL followed by every `key + value`, sorted by key (and by value for repeated keys, as
/// Twilio's helper libraries do).
fn signed_string(full_url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut signed = String::from(full_url);
    for (key, value) in sorted {
        signed.push_str(key);
        signed.push_str(value);
    }
    signed
}

/// Decodes one status callback. `raw_body` is kept as the record's raw bytes.
pub fn decode(
    source: &str,
    params: &[(String, String)],
    raw_body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Inbound, TwilioError> {
    let lookup = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let call_sid = lookup("CallSid")
        .filter(|sid| !sid.trim().is_empty())
        .ok_or(TwilioError::MissingParameter("CallSid"))?;
    let call_status = lookup("CallStatus").unwrap_or_default();

    let mut fields = Fields::new();
    for (key, value) in params {
        put_str(&mut fields, key, value);
    }
    let direction = lookup("Direction").map(neutral_direction);
    put_str(&mut fields, "call_id", call_sid);
    put_str(&mut fields, "event", neutral_event(call_status, direction));
    put_opt(&mut fields, "from", lookup("From"));
    put_opt(&mut fields, "to", lookup("To"));
    put_opt(&mut fields, "direction", direction);
    put_opt(&mut fields, "duration_seconds", lookup("CallDuration"));
    put_opt(&mut fields, "recording_url", lookup("RecordingUrl"));
    put_opt(&mut fields, "caller_name", lookup("CallerName"));
    // The other party: who called us, or whom we called.
    let customer = if direction == Some("outbound") {
        lookup("To")
    } else {
        lookup("From")
    };
    put_opt(&mut fields, "customer_phone", customer);
    if let Some(at) = lookup("Timestamp").and_then(|text| DateTime::parse_from_rfc2822(text).ok()) {
        fields.insert(
            "occurred_at".into(),
            at.with_timezone(&Utc).to_rfc3339().into(),
        );
    }

    Ok(Inbound {
        source: source.to_owned(),
        // Each status of a call is its own event; a retried callback repeats it.
        external_id: Some(format!("{call_sid}:{call_status}")),
        received_at,
        fields,
        raw: raw_body.to_vec(),
    })
}

fn neutral_direction(direction: &str) -> &'static str {
    if direction.starts_with("outbound") {
        "outbound"
    } else {
        "inbound"
    }
}

/// Twilio `CallStatus` in the vocabulary of [`crate::cti_generic::CallEventKind`].
fn neutral_event<'a>(call_status: &'a str, direction: Option<&str>) -> &'a str {
    match call_status {
        "queued" | "initiated" => "initiated",
        "ringing" => "ringing",
        "in-progress" | "answered" => "answered",
        "completed" => "completed",
        "busy" => "busy",
        "no-answer" => "no_answer",
        "failed" => "failed",
        // A caller hanging up before anyone answered is what a sales team calls "missed".
        "canceled" if direction != Some("outbound") => "missed",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_736_874_312, 0).unwrap_or_default()
    }

    fn field<'a>(record: &'a Inbound, key: &str) -> Option<&'a str> {
        record.fields.get(key).and_then(Value::as_str)
    }

    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const DOC_TOKEN: &str = "12345";
    const DOC_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn matches_the_documented_example() {
        let params = parse_form(&fixture("signature_example.form"));
        assert_eq!(
            expected_signature(DOC_TOKEN, DOC_URL, &params),
            DOC_SIGNATURE
        );
        assert!(verify_signature(DOC_TOKEN, DOC_URL, &params, Some(DOC_SIGNATURE)).is_ok());
        // Parameter order on the wire does not matter.
        let mut reversed = params.clone();
        reversed.reverse();
        assert!(verify_signature(DOC_TOKEN, DOC_URL, &reversed, Some(DOC_SIGNATURE)).is_ok());
    }

    #[test]
    fn refuses_bad_signature_other_url_tampering_and_missing_header() {
        let params = parse_form(&fixture("signature_example.form"));
        assert!(matches!(
            verify_signature("54321", DOC_URL, &params, Some(DOC_SIGNATURE)),
            Err(TwilioError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature(
                DOC_TOKEN,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params,
                Some(DOC_SIGNATURE)
            ),
            Err(TwilioError::Signature(SignatureError::Mismatch))
        ));
        let mut tampered = params.clone();
        tampered.push(("Digits".into(), "9".into()));
        assert!(matches!(
            verify_signature(DOC_TOKEN, DOC_URL, &tampered, Some(DOC_SIGNATURE)),
            Err(TwilioError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature(DOC_TOKEN, DOC_URL, &params, None),
            Err(TwilioError::Signature(SignatureError::MissingHeader(_)))
        ));
        assert!(matches!(
            verify_signature(DOC_TOKEN, DOC_URL, &params, Some("not base64!")),
            Err(TwilioError::Signature(
                SignatureError::MalformedHeader { .. }
            ))
        ));
        assert!(matches!(
            verify_signature("", DOC_URL, &params, Some(DOC_SIGNATURE)),
            Err(TwilioError::Signature(SignatureError::EmptySecret))
        ));
    }

    #[test]
    fn decodes_a_completed_inbound_call() {
        let body = fixture("call_completed.form");
        let record = decode(DEFAULT_SOURCE, &parse_form(&body), &body, at());
        let record = record.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(record.source, "cti:twilio");
        assert_eq!(
            record.external_id.as_deref(),
            Some("CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:completed")
        );
        assert_eq!(field(&record, "CallStatus"), Some("completed"));
        assert_eq!(field(&record, "From"), Some("+14155551234"));
        assert_eq!(field(&record, "CallerName"), Some("Jane Doe"));
        assert_eq!(field(&record, "event"), Some("completed"));
        assert_eq!(field(&record, "direction"), Some("inbound"));
        assert_eq!(field(&record, "duration_seconds"), Some("95"));
        assert_eq!(field(&record, "customer_phone"), Some("+14155551234"));
        assert!(
            field(&record, "recording_url")
                .is_some_and(|url| url.ends_with("/Recordings/REXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"))
        );
        assert_eq!(
            field(&record, "occurred_at"),
            Some("2025-01-14T17:05:12+00:00")
        );
        // Empty parameters (CalledCity=) are not fields.
        assert_eq!(field(&record, "CalledCity"), None);
        assert_eq!(record.raw, body);
    }

    #[test]
    fn each_status_of_a_call_is_its_own_event() {
        let ringing = fixture("call_ringing.form");
        let completed = fixture("call_completed.form");
        let ringing = decode(DEFAULT_SOURCE, &parse_form(&ringing), &ringing, at()).ok();
        let completed = decode(DEFAULT_SOURCE, &parse_form(&completed), &completed, at()).ok();
        let ids = (
            ringing.as_ref().and_then(|r| r.external_id.clone()),
            completed.as_ref().and_then(|r| r.external_id.clone()),
        );
        assert!(ids.0.is_some());
        assert_ne!(ids.0, ids.1);
        assert_eq!(
            ringing.as_ref().and_then(|r| field(r, "event")),
            Some("ringing")
        );
    }

    #[test]
    fn outbound_no_answer_uses_the_called_party_as_customer() {
        let body = fixture("call_no_answer.form");
        let record = decode("cti:twilio-eu", &parse_form(&body), &body, at());
        let record = record.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(record.source, "cti:twilio-eu");
        assert_eq!(field(&record, "event"), Some("no_answer"));
        assert_eq!(field(&record, "direction"), Some("outbound"));
        assert_eq!(field(&record, "customer_phone"), Some("+447700900123"));
    }

    #[test]
    fn status_vocabulary() {
        assert_eq!(neutral_event("canceled", Some("inbound")), "missed");
        assert_eq!(neutral_event("canceled", Some("outbound")), "canceled");
        assert_eq!(neutral_event("in-progress", None), "answered");
        assert_eq!(neutral_event("failed", None), "failed");
    }

    #[test]
    fn missing_call_sid_and_garbage_bodies_are_errors_not_panics() {
        let params = parse_form(b"CallStatus=completed&From=%2B1");
        assert!(matches!(
            decode(DEFAULT_SOURCE, &params, b"", at()),
            Err(TwilioError::MissingParameter("CallSid"))
        ));
        let garbage = parse_form(b"%%%&&==\xff\xfe=%E2%82");
        assert!(decode(DEFAULT_SOURCE, &garbage, b"", at()).is_err());
    }
}
