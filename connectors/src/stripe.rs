//! Stripe webhooks (`payment_intent.succeeded`, `charge.refunded`).
//!
//! * `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`, where each `v1` is
//!   hex HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint's signing secret
//!   (`whsec_…`, used as given). Any matching `v1` passes (Stripe sends one per active
//!   secret while a secret is rolled); `t` must be within the tolerance ([`verify_signature`]).
//! * An event is `{"id": "evt_…", "type": …, "created": …, "data": {"object": {…}}}`.
//!   For `payment_intent.succeeded` the object is the PaymentIntent (`id`, `amount`,
//!   `amount_received`, `currency`, `metadata`); for `charge.refunded` it is the Charge
//!   (`id`, `payment_intent`, `amount_refunded` — the total refunded so far — `currency`,
//!   `metadata`). Amounts are integers in the currency's minor unit.
//! * [`decode`] makes one record per handled event with the event id as its external id,
//!   so a replayed event is the same record; other event types are `None`.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::signature::{self, SignatureError};
use crate::{Fields, Inbound};

pub const SOURCE: &str = "stripe";
pub const SIGNATURE_HEADER: &str = "stripe-signature";
pub const PAYMENT_SUCCEEDED: &str = "payment_intent.succeeded";
pub const CHARGE_REFUNDED: &str = "charge.refunded";

/// Currencies without a minor unit in Stripe's amounts.
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("body is not valid event JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("event has no \"{0}\"")]
    MissingField(&'static str),
}

/// Digits of the currency's minor unit (ISO code, any case).
pub fn minor_digits(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency.to_ascii_uppercase().as_str()) {
        0
    } else {
        2
    }
}

/// `1050` USD → `"10.50"`, `500` JPY → `"500"`, as exact text.
pub fn minor_to_decimal(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10_i64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale as u64,
        abs % scale as u64,
        width = digits as usize
    )
}

/// Checks `Stripe-Signature` against the raw body: MAC first, then the timestamp.
pub fn verify_signature(
    secret: &str,
    body: &[u8],
    signature_header: Option<&str>,
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<(), SignatureError> {
    let key = signature::require_secret(secret)?;
    let header = signature::require_header(signature_header, SIGNATURE_HEADER)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value.trim()),
            Some(("v1", value)) => candidates.push(value.trim()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader {
        header: SIGNATURE_HEADER,
        reason: "no t=",
    })?;
    if candidates.is_empty() {
        return Err(SignatureError::MalformedHeader {
            header: SIGNATURE_HEADER,
            reason: "no v1= signature",
        });
    }
    let expected = signature::hmac_sha256(key, &[timestamp.as_bytes(), b".", body]);
    // Every candidate is compared (in constant time), so timing says nothing of which.
    let matched = candidates
        .iter()
        .map(|candidate| signature::verify_hex(&expected, candidate, SIGNATURE_HEADER).is_ok())
        .fold(false, |any, ok| any | ok);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    signature::check_freshness(timestamp, SIGNATURE_HEADER, now, tolerance)?;
    Ok(())
}

/// Builds a `Stripe-Signature` value (for tests and local tools).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let stamp = timestamp.to_string();
    let mac = signature::hmac_sha256_hex(secret.as_bytes(), &[stamp.as_bytes(), b".", body]);
    format!("t={stamp},v1={mac}")
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The event's type, for answering events we do not handle without storing them.
pub fn event_type(body: &[u8]) -> Result<String, StripeError> {
    let value: Value = serde_json::from_slice(body)?;
    text(&value, "/type").ok_or(StripeError::MissingField("type"))
}

/// One record for a handled event, `None` for other types.
pub fn decode(body: &[u8], received_at: DateTime<Utc>) -> Result<Option<Inbound>, StripeError> {
    let value: Value = serde_json::from_slice(body)?;
    let id = text(&value, "/id").ok_or(StripeError::MissingField("id"))?;
    let kind = text(&value, "/type").ok_or(StripeError::MissingField("type"))?;
    let object = value
        .pointer("/data/object")
        .ok_or(StripeError::MissingField("data.object"))?;
    let currency = text(object, "/currency")
        .ok_or(StripeError::MissingField("data.object.currency"))?
        .to_ascii_uppercase();
    let minor = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64);
    let mut fields = Fields::new();
    fields.insert("event_id".into(), id.clone().into());
    fields.insert("event_type".into(), kind.clone().into());
    fields.insert("currency".into(), currency.clone().into());
    match kind.as_str() {
        PAYMENT_SUCCEEDED => {
            let amount = minor("/amount_received")
                .or_else(|| minor("/amount"))
                .ok_or(StripeError::MissingField("data.object.amount"))?;
            fields.insert("amount".into(), minor_to_decimal(amount, &currency).into());
            fields.insert(
                "payment_intent".into(),
                text(object, "/id")
                    .ok_or(StripeError::MissingField("data.object.id"))?
                    .into(),
            );
            if let Some(method) = text(object, "/payment_method_types/0") {
                fields.insert("method".into(), method.into());
            }
        }
        CHARGE_REFUNDED => {
            let refunded = minor("/amount_refunded")
                .ok_or(StripeError::MissingField("data.object.amount_refunded"))?;
            fields.insert(
                "amount_refunded".into(),
                minor_to_decimal(refunded, &currency).into(),
            );
            let reference = text(object, "/payment_intent")
                .or_else(|| text(object, "/id"))
                .ok_or(StripeError::MissingField("data.object.payment_intent"))?;
            fields.insert("payment_intent".into(), reference.into());
        }
        _ => return Ok(None),
    }
    if let Some(created) = value.get("created").and_then(Value::as_i64)
        && let Some(at) = DateTime::from_timestamp(created, 0)
    {
        fields.insert("created".into(), at.to_rfc3339().into());
    }
    for key in ["account_id", "invoice_id", "invoice_number"] {
        if let Some(v) = text(object, &format!("/metadata/{key}")) {
            fields.insert(key.into(), v.into());
        }
    }
    Ok(Some(Inbound {
        source: SOURCE.to_owned(),
        external_id: Some(id),
        received_at,
        fields,
        raw: body.to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let now = Utc::now();
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, now.timestamp(), body);
        let tolerance = TimeDelta::seconds(300);
        assert!(verify_signature(SECRET, body, Some(&header), now, tolerance).is_ok());
        assert_eq!(
            verify_signature(SECRET, b"{\"id\":\"evt_2\"}", Some(&header), now, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("whsec_other", body, Some(&header), now, tolerance),
            Err(SignatureError::Mismatch)
        );
        let late = now + TimeDelta::seconds(301);
        assert!(matches!(
            verify_signature(SECRET, body, Some(&header), late, tolerance),
            Err(SignatureError::StaleTimestamp { .. })
        ));
        assert!(verify_signature(SECRET, body, None, now, tolerance).is_err());
    }

    #[test]
    fn a_rolled_secret_passes_with_either_v1() {
        let now = Utc::now();
        let body = b"{}";
        let good = sign(SECRET, now.timestamp(), body);
        let header = format!(
            "t={},v1={},{}",
            now.timestamp(),
            "00".repeat(32),
            good.split(',').nth(1).unwrap_or_default()
        );
        assert!(
            verify_signature(SECRET, body, Some(&header), now, TimeDelta::seconds(300)).is_ok()
        );
    }

    #[test]
    fn minor_units_become_exact_text() {
        assert_eq!(minor_to_decimal(1050, "usd"), "10.50");
        assert_eq!(minor_to_decimal(5, "EUR"), "0.05");
        assert_eq!(minor_to_decimal(500, "JPY"), "500");
    }
}
