//! Leadgate's own call-event format, for telephony systems (PBX, CTI middleware, dialers)
//! that can send a signed JSON webhook.
//!
//! # Generic CTI webhook, version 1
//!
//! `POST` one call event per request, `Content-Type: application/json`:
//!
//! ```json
//! {
//!   "call_id": "pbx-7f3a9c21",
//!   "event": "completed",
//!   "from": "+4930123456789",
//!   "to": "+4940987654321",
//!   "direction": "inbound",
//!   "duration_seconds": 312,
//!   "recording_url": "https://pbx.example.com/recordings/pbx-7f3a9c21.mp3",
//!   "agent": "j.meyer@example.com",
//!   "occurred_at": "2025-03-04T10:15:42Z"
//! }
//! ```
//!
//! | field | type | required | meaning |
//! |---|---|---|---|
//! | `call_id` | string | yes | the system's id of the call; the same for all events of one call |
//! | `event` | string | yes | `ringing`, `answered`, `completed`, `missed`, `busy` or `no_answer` |
//! | `from` | string | no | calling number, E.164 (`+4930…`) preferred |
//! | `to` | string | no | called number, E.164 preferred |
//! | `direction` | string | no | `inbound` or `outbound` |
//! | `duration_seconds` | integer | no | talk time, on `completed` |
//! | `recording_url` | string | no | where the recording can be fetched |
//! | `agent` | string | no | the user who took or placed the call (email or extension) |
//! | `occurred_at` | string | yes | RFC 3339 time of the event, with offset |
//!
//! Unknown fields are kept (as `extra.<name>`), so senders may add their own.
//!
//! ## Signing
//!
//! * `X-Leadgate-Timestamp`: the Unix time in seconds when the request was sent.
//! * `X-Leadgate-Signature`: `sha256=` followed by the lower-case hex HMAC-SHA256, keyed with
//!   the shared secret, of the string `{timestamp}.{raw body}` (the timestamp header value, a
//!   dot, then the body bytes exactly as sent).
//!
//! Requests whose timestamp is more than the tolerance (default 300 s) away from the
//! receiver's clock are refused, so a captured request cannot be replayed later; within the
//! window, a replay carries the same `call_id` and `event` and is deduplicated by them.
//!
//! ```text
//! ts=$(date +%s)
//! sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" -hex | cut -d' ' -f2)
//! curl -H "X-Leadgate-Timestamp: $ts" -H "X-Leadgate-Signature: sha256=$sig" \
//!      -H 'Content-Type: application/json' --data "$body" https://leadgate.example.com/…
//! ```

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::signature::{self, SignatureError};
use crate::util::{put_opt, put_str, scalar_to_string};
use crate::{Fields, Inbound};

pub const DEFAULT_SOURCE: &str = "cti:generic";
pub const SIGNATURE_HEADER: &str = "X-Leadgate-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Leadgate-Timestamp";
const SIGNATURE_PREFIX: &str = "sha256=";

/// Configuration of one generic CTI sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtiGenericConfig {
    pub secret: String,
    #[serde(default = "default_tolerance_seconds")]
    pub timestamp_tolerance_seconds: u32,
    /// `cti:<instance>`, so two PBXs stay apart.
    #[serde(default = "default_source")]
    pub source: String,
}

fn default_tolerance_seconds() -> u32 {
    300
}

fn default_source() -> String {
    DEFAULT_SOURCE.to_owned()
}

impl CtiGenericConfig {
    pub fn tolerance(&self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.timestamp_tolerance_seconds))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CtiError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("body is not a valid call event: {0}")]
    InvalidEvent(#[from] serde_json::Error),
    #[error("call_id is empty")]
    EmptyCallId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    Ringing,
    Answered,
    Completed,
    Missed,
    Busy,
    NoAnswer,
}

impl CallEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
            Self::Missed => "missed",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Inbound,
    Outbound,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One call event as specified in the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub call_id: String,
    pub event: CallEventKind,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub direction: Option<CallDirection>,
    #[serde(default)]
    pub duration_seconds: Option<u64>,
    #[serde(default)]
    pub recording_url: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// Sender-specific additions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The header value a sender puts in `X-Leadgate-Signature` (for senders, tests and docs).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "{SIGNATURE_PREFIX}{}",
        signature::hmac_sha256_hex(secret.as_bytes(), &[timestamp.as_bytes(), b".", body])
    )
}

/// Verifies the signature over `{timestamp}.{body}` and the timestamp's freshness.
pub fn verify_signature(
    secret: &str,
    timestamp_header: Option<&str>,
    body: &[u8],
    signature_header: Option<&str>,
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<(), CtiError> {
    let key = signature::require_secret(secret)?;
    let timestamp = signature::require_header(timestamp_header, TIMESTAMP_HEADER)?;
    let header = signature::require_header(signature_header, SIGNATURE_HEADER)?;
    let provided = signature::strip_prefix(header, SIGNATURE_PREFIX, SIGNATURE_HEADER)?;
    let expected = signature::hmac_sha256(key, &[timestamp.as_bytes(), b".", body]);
    signature::verify_hex(&expected, provided, SIGNATURE_HEADER)?;
    signature::check_freshness(timestamp, TIMESTAMP_HEADER, now, tolerance)?;
    Ok(())
}

/// Decodes one call event into a record with external id `{call_id}:{event}`.
pub fn decode(source: &str, body: &[u8], received_at: DateTime<Utc>) -> Result<Inbound, CtiError> {
    let event: CallEvent = serde_json::from_slice(body)?;
    let call_id = event.call_id.trim();
    if call_id.is_empty() {
        return Err(CtiError::EmptyCallId);
    }
    let mut fields = Fields::new();
    put_str(&mut fields, "call_id", call_id);
    put_str(&mut fields, "event", event.event.as_str());
    put_opt(&mut fields, "from", event.from.as_deref());
    put_opt(&mut fields, "to", event.to.as_deref());
    put_opt(
        &mut fields,
        "direction",
        event.direction.map(CallDirection::as_str),
    );
    if let Some(duration) = event.duration_seconds {
        put_str(&mut fields, "duration_seconds", &duration.to_string());
    }
    put_opt(&mut fields, "recording_url", event.recording_url.as_deref());
    put_opt(&mut fields, "agent", event.agent.as_deref());
    let customer = match event.direction {
        Some(CallDirection::Outbound) => event.to.as_deref(),
        _ => event.from.as_deref(),
    };
    put_opt(&mut fields, "customer_phone", customer);
    fields.insert("occurred_at".into(), event.occurred_at.to_rfc3339().into());
    for (key, value) in &event.extra {
        match scalar_to_string(value) {
            Some(text) => put_str(&mut fields, &format!("extra.{key}"), &text),
            None if !value.is_null() => {
                fields.insert(format!("extra.{key}"), value.clone());
            }
            None => {}
        }
    }

    Ok(Inbound {
        source: source.to_owned(),
        external_id: Some(format!("{call_id}:{}", event.event.as_str())),
        received_at,
        fields,
        raw: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "shared-secret";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../fixtures/cti_generic/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_083_400, 0).unwrap_or_default()
    }

    fn field<'a>(record: &'a Inbound, key: &str) -> Option<&'a str> {
        record.fields.get(key).and_then(Value::as_str)
    }

    #[test]
    fn signature_good_bad_missing_and_stale() {
        let body = fixture("call_completed.json");
        let tolerance = TimeDelta::seconds(300);
        let timestamp = "1741083400";
        let good = sign(SECRET, timestamp, &body);
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
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
                "other",
                Some(timestamp),
                &body,
                Some(&good),
                now(),
                tolerance
            ),
            Err(CtiError::Signature(SignatureError::Mismatch))
        ));
        let mut tampered = body.clone();
        tampered.extend_from_slice(b"\n");
        assert!(matches!(
            verify_signature(
                SECRET,
                Some(timestamp),
                &tampered,
                Some(&good),
                now(),
                tolerance
            ),
            Err(CtiError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_signature(SECRET, Some(timestamp), &body, None, now(), tolerance),
            Err(CtiError::Signature(SignatureError::MissingHeader(
                SIGNATURE_HEADER
            )))
        ));
        assert!(matches!(
            verify_signature(SECRET, None, &body, Some(&good), now(), tolerance),
            Err(CtiError::Signature(SignatureError::MissingHeader(
                TIMESTAMP_HEADER
            )))
        ));
        // A correctly signed but old request is a replay.
        let old = "1741080000";
        assert!(matches!(
            verify_signature(
                SECRET,
                Some(old),
                &body,
                Some(&sign(SECRET, old, &body)),
                now(),
                tolerance
            ),
            Err(CtiError::Signature(SignatureError::StaleTimestamp { .. }))
        ));
    }

    #[test]
    fn decodes_the_documented_example() {
        let body = fixture("call_completed.json");
        let record = decode(DEFAULT_SOURCE, &body, now()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(record.source, "cti:generic");
        assert_eq!(
            record.external_id.as_deref(),
            Some("pbx-7f3a9c21:completed")
        );
        assert_eq!(field(&record, "event"), Some("completed"));
        assert_eq!(field(&record, "duration_seconds"), Some("312"));
        assert_eq!(field(&record, "agent"), Some("j.meyer@example.com"));
        assert_eq!(field(&record, "customer_phone"), Some("+4930123456789"));
        assert_eq!(
            field(&record, "occurred_at"),
            Some("2025-03-04T10:15:42+00:00")
        );
        assert_eq!(record.raw, body);
    }

    #[test]
    fn offsets_are_normalised_to_utc_and_extras_kept() {
        let body = fixture("call_missed.json");
        let record =
            decode("cti:office-pbx", &body, now()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(record.source, "cti:office-pbx");
        assert_eq!(field(&record, "event"), Some("missed"));
        assert_eq!(
            field(&record, "occurred_at"),
            Some("2025-03-04T09:21:07+00:00")
        );

        let with_extra = br#"{"call_id":"c1","event":"no_answer","occurred_at":"2025-03-04T10:00:00Z","queue":"sales","tags":["a"]}"#;
        let record =
            decode(DEFAULT_SOURCE, with_extra, now()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(field(&record, "extra.queue"), Some("sales"));
        assert!(record.fields.contains_key("extra.tags"));
        assert_eq!(record.external_id.as_deref(), Some("c1:no_answer"));
    }

    #[test]
    fn invalid_events_are_errors() {
        let body = fixture("call_completed.json");
        assert!(matches!(
            decode(DEFAULT_SOURCE, &body[..40], now()),
            Err(CtiError::InvalidEvent(_))
        ));
        let unknown_event =
            br#"{"call_id":"c1","event":"exploded","occurred_at":"2025-03-04T10:00:00Z"}"#;
        assert!(matches!(
            decode(DEFAULT_SOURCE, unknown_event, now()),
            Err(CtiError::InvalidEvent(_))
        ));
        let no_time = br#"{"call_id":"c1","event":"ringing"}"#;
        assert!(matches!(
            decode(DEFAULT_SOURCE, no_time, now()),
            Err(CtiError::InvalidEvent(_))
        ));
        let blank_id =
            br#"{"call_id":"  ","event":"ringing","occurred_at":"2025-03-04T10:00:00Z"}"#;
        assert!(matches!(
            decode(DEFAULT_SOURCE, blank_id, now()),
            Err(CtiError::EmptyCallId)
        ));
    }
}
