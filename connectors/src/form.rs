//! Website form submissions: urlencoded bodies, JSON objects, or multipart fields already
//! split into pairs by the HTTP layer.
//!
//! The connector turns a submission into [`Fields`], validates it against a [`FormConfig`],
//! spots honeypot spam, and gives it an external id that is the same for a double submit
//! within the form's dedup window.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::signature::sha256_hex;
use crate::{Fields, Inbound};

/// Configuration of one website form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormConfig {
    /// Becomes the source `form:<name>`.
    pub name: String,
    /// `Origin` values allowed to post (`https://www.example.com`); empty allows any, `*` too.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Fields that must be present and non-blank.
    #[serde(default)]
    pub required: Vec<String>,
    /// A field hidden from people; bots fill it in.
    #[serde(default)]
    pub honeypot_field: Option<String>,
    /// Where the browser is redirected after a plain HTML form post.
    #[serde(default)]
    pub thank_you_url: Option<String>,
    /// The field mapping applied downstream.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Identical submissions within one window share an external id; 0 turns this off.
    #[serde(default = "default_dedup_window_seconds")]
    pub dedup_window_seconds: u64,
}

fn default_dedup_window_seconds() -> u64 {
    600
}

impl FormConfig {
    pub fn source(&self) -> String {
        format!("form:{}", self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("JSON body must be an object of fields")]
    NotAnObject,
}

/// One reason a submission was refused, for the form to show next to the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Fields from an `application/x-www-form-urlencoded` body.
pub fn fields_from_urlencoded(body: &[u8]) -> Fields {
    fields_from_pairs(form_urlencoded::parse(body).into_owned())
}

/// Fields from a JSON object body; nested values are kept as they are.
pub fn fields_from_json(body: &[u8]) -> Result<Fields, FormError> {
    match serde_json::from_slice(body)? {
        Value::Object(fields) => Ok(fields),
        _ => Err(FormError::NotAnObject),
    }
}

/// Fields from name/value pairs (urlencoded or multipart). A repeated name (checkbox groups,
/// `interest[]`) becomes an array, in submission order.
pub fn fields_from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Fields {
    let mut fields = Fields::new();
    for (name, value) in pairs {
        let name = name.strip_suffix("[]").unwrap_or(&name).trim().to_owned();
        if name.is_empty() {
            continue;
        }
        match fields.get_mut(&name) {
            Some(Value::Array(values)) => values.push(Value::String(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value)]);
            }
            None => {
                fields.insert(name, Value::String(value));
            }
        }
    }
    fields
}

/// Checks required fields and that an `email` field looks like an address; returns every
/// problem at once so the form can mark them all.
pub fn validate(config: &FormConfig, fields: &Fields) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    for name in &config.required {
        if fields.get(name).is_none_or(is_blank) {
            errors.push(FieldError {
                field: name.clone(),
                message: "is required".into(),
            });
        }
    }
    for (name, value) in fields {
        if !name.eq_ignore_ascii_case("email") {
            continue;
        }
        if let Some(text) = value.as_str().filter(|text| !text.trim().is_empty())
            && !looks_like_email(text.trim())
        {
            errors.push(FieldError {
                field: name.clone(),
                message: "is not an email address".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        Value::Array(values) => values.iter().all(is_blank),
        _ => false,
    }
}

/// A deliberately loose check (`local@domain.tld`, no spaces): strict RFC 5322 parsing
/// refuses real addresses, and the mailbox itself is the only real test.
pub fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let labels_ok = domain
        .split('.')
        .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && labels_ok
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
}

/// True when the honeypot field was filled in: a person never sees it.
pub fn is_spam(config: &FormConfig, fields: &Fields) -> bool {
    config
        .honeypot_field
        .as_ref()
        .and_then(|name| fields.get(name))
        .is_some_and(|value| !is_blank(value))
}

/// Whether a browser `Origin` may post to this form. A request without an Origin (server to
/// server, old browsers) is allowed only when no origins are configured.
pub fn is_origin_allowed(config: &FormConfig, origin: Option<&str>) -> bool {
    if config.allowed_origins.is_empty() || config.allowed_origins.iter().any(|o| o == "*") {
        return true;
    }
    let Some(origin) = origin else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    config.allowed_origins.iter().any(|allowed| {
        allowed
            .trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(origin)
    })
}

/// The double-submit key: SHA-256 of the form name, the normalised field values and the
/// dedup-window bucket. Fixed buckets mean two identical submits straddling a bucket edge are
/// kept apart; that errs on the side of keeping a lead.
pub fn dedup_key(config: &FormConfig, fields: &Fields, at: DateTime<Utc>) -> String {
    let bucket = if config.dedup_window_seconds == 0 {
        // No suppression: every submission is its own event.
        format!("t{}", at.timestamp_micros())
    } else {
        let window = i64::try_from(config.dedup_window_seconds).unwrap_or(i64::MAX);
        format!("b{}", at.timestamp().div_euclid(window))
    };
    // Sorted explicitly: the Map's order depends on serde_json features chosen elsewhere.
    let normalised: BTreeMap<String, String> = fields
        .iter()
        .filter(|(name, _)| Some(*name) != config.honeypot_field.as_ref())
        .map(|(name, value)| (name.trim().to_lowercase(), normalise(value)))
        .filter(|(_, value)| !value.is_empty())
        .collect();
    let mut material = format!("{}\u{0}{bucket}", config.name);
    for (name, value) in normalised {
        material.push('\u{0}');
        material.push_str(&name);
        material.push('=');
        material.push_str(&value);
    }
    sha256_hex(material.as_bytes())
}

/// Case- and whitespace-insensitive rendering, so "Jane  Doe " and "jane doe" are the same.
fn normalise(value: &Value) -> String {
    match value {
        Value::String(text) => text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        Value::Array(values) => values.iter().map(normalise).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string().to_lowercase(),
    }
}

/// Builds the record for an accepted submission; the honeypot field is dropped.
pub fn decode(
    config: &FormConfig,
    mut fields: Fields,
    raw_body: &[u8],
    received_at: DateTime<Utc>,
) -> Inbound {
    let external_id = dedup_key(config, &fields, received_at);
    if let Some(honeypot) = &config.honeypot_field {
        fields.remove(honeypot);
    }
    Inbound {
        source: config.source(),
        external_id: Some(external_id),
        received_at,
        fields,
        raw: raw_body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/form/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn config() -> FormConfig {
        serde_json::from_value(serde_json::json!({
            "name": "contact",
            "allowed_origins": ["https://www.example.com"],
            "required": ["email", "name"],
            "honeypot_field": "website",
            "thank_you_url": "https://www.example.com/thanks",
            "mapping": "contact-form",
            "dedup_window_seconds": 600
        }))
        .unwrap_or_else(|error| panic!("{error}"))
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_083_000, 0).unwrap_or_default()
    }

    #[test]
    fn urlencoded_fixture_decodes_with_repeated_fields_as_arrays() {
        let body = fixture("contact.urlencoded");
        let fields = fields_from_urlencoded(&body);
        assert_eq!(fields["name"], "Jane Doe");
        assert_eq!(fields["email"], "jane.doe@example.org");
        assert_eq!(
            fields["message"],
            "Please call me back about pricing & onboarding."
        );
        assert_eq!(fields["interest"], serde_json::json!(["crm", "api"]));
        assert!(validate(&config(), &fields).is_ok());
        assert!(!is_spam(&config(), &fields));
        let record = decode(&config(), fields, &body, at());
        assert_eq!(record.source, "form:contact");
        assert_eq!(record.raw, body);
        assert!(!record.fields.contains_key("website"));
        assert_eq!(record.external_id.as_deref().map(str::len), Some(64));
    }

    #[test]
    fn json_fixture_and_multipart_pairs_decode_to_the_same_fields() {
        let json = fields_from_json(&fixture("contact.json")).unwrap_or_default();
        let pairs = fields_from_pairs(vec![
            ("name".to_owned(), "Jane Doe".to_owned()),
            ("email".to_owned(), "jane.doe@example.org".to_owned()),
            ("company".to_owned(), "Example GmbH".to_owned()),
            (
                "message".to_owned(),
                "Please call me back about pricing & onboarding.".to_owned(),
            ),
            ("interest[]".to_owned(), "crm".to_owned()),
            ("interest[]".to_owned(), "api".to_owned()),
        ]);
        assert_eq!(json, pairs);
    }

    #[test]
    fn json_must_be_a_complete_object() {
        let body = fixture("contact.json");
        assert!(matches!(
            fields_from_json(&body[..body.len() / 2]),
            Err(FormError::InvalidJson(_))
        ));
        assert!(matches!(
            fields_from_json(b"[1,2]"),
            Err(FormError::NotAnObject)
        ));
    }

    #[test]
    fn validation_reports_every_problem() {
        let fields = fields_from_urlencoded(b"name=+++&email=not-an-address");
        let errors = validate(&config(), &fields).err().unwrap_or_default();
        assert_eq!(errors.len(), 2);
        assert!(
            errors
                .iter()
                .any(|e| e.field == "name" && e.message == "is required")
        );
        assert!(
            errors
                .iter()
                .any(|e| e.field == "email" && e.message.contains("email"))
        );
        let missing = validate(&config(), &Fields::new())
            .err()
            .unwrap_or_default();
        assert_eq!(missing.len(), 2);
    }

    #[test]
    fn email_check_is_loose_but_not_empty() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "o'neil@example.ie",
        ] {
            assert!(looks_like_email(good), "{good}");
        }
        for bad in [
            "", "a@b", "@b.co", "a b@c.de", "a@.de", "a@b..de", "a@@b.de", "a@-b.de",
        ] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }

    #[test]
    fn honeypot_marks_spam() {
        let mut fields = fields_from_urlencoded(&fixture("contact.urlencoded"));
        fields.insert("website".into(), "http://spam.example".into());
        assert!(is_spam(&config(), &fields));
        let no_honeypot = FormConfig {
            honeypot_field: None,
            ..config()
        };
        assert!(!is_spam(&no_honeypot, &fields));
    }

    #[test]
    fn origins() {
        let config = config();
        assert!(is_origin_allowed(&config, Some("https://www.example.com")));
        assert!(is_origin_allowed(&config, Some("https://WWW.example.com/")));
        assert!(!is_origin_allowed(&config, Some("https://evil.example")));
        assert!(!is_origin_allowed(&config, None));
        let open = FormConfig {
            allowed_origins: vec![],
            ..config
        };
        assert!(is_origin_allowed(&open, None));
    }

    #[test]
    fn double_submits_share_a_key_within_the_window_only() {
        let config = config();
        let first = fields_from_urlencoded(b"name=Jane+Doe&email=Jane@Example.org&website=");
        let again = fields_from_urlencoded(b"email=jane@example.org&name=jane++doe+");
        let other = fields_from_urlencoded(b"name=Jane+Doe&email=jane@example.org&message=hi");
        // at() is 1_741_083_000, exactly on a 600 s bucket edge.
        let key = dedup_key(&config, &first, at());
        assert_eq!(
            key,
            dedup_key(&config, &again, at() + TimeDelta::seconds(30))
        );
        assert_ne!(key, dedup_key(&config, &other, at()));
        assert_ne!(
            key,
            dedup_key(&config, &first, at() + TimeDelta::seconds(600))
        );
        let renamed = FormConfig {
            name: "newsletter".into(),
            ..config.clone()
        };
        assert_ne!(key, dedup_key(&renamed, &first, at()));
        let off = FormConfig {
            dedup_window_seconds: 0,
            ..config
        };
        assert_ne!(
            dedup_key(&off, &first, at()),
            dedup_key(&off, &first, at() + TimeDelta::milliseconds(1))
        );
    }

    #[test]
    fn config_defaults() {
        let minimal: FormConfig =
            serde_json::from_str(r#"{"name":"demo"}"#).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(minimal.dedup_window_seconds, 600);
        assert!(minimal.required.is_empty());
        assert!(serde_json::from_str::<FormConfig>(r#"{"name":"x","requird":[]}"#).is_err());
    }
}
