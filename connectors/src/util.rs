//! Small helpers shared by the decoders for building flat [`Fields`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Fields;

/// Inserts a string field unless the value is empty after trimming: providers send `""` for
/// "not given" and an empty field would overwrite a real value during mapping.
pub(crate) fn put_str(fields: &mut Fields, key: &str, value: &str) {
    let value = value.trim();
    if !value.is_empty() {
        fields.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// Like [`put_str`] for an optional value.
pub(crate) fn put_opt(fields: &mut Fields, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        put_str(fields, key, value);
    }
}

/// Copies a JSON scalar found at `value[path...]` as a string field (numbers and booleans are
/// rendered, so ids that providers send sometimes as numbers and sometimes as strings agree).
pub(crate) fn put_json_scalar(fields: &mut Fields, key: &str, value: Option<&Value>) {
    if let Some(text) = value.and_then(scalar_to_string) {
        put_str(fields, key, &text);
    }
}

/// Renders a JSON scalar as a string; `None` for null, arrays and objects.
pub(crate) fn scalar_to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Reads a nested string (or number) at a path of object keys.
pub(crate) fn text_at(value: &Value, path: &[&str]) -> Option<String> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    scalar_to_string(current)
}

/// Unix seconds (as the string or number providers send) to UTC.
pub(crate) fn unix_seconds_to_utc(seconds: &str) -> Option<DateTime<Utc>> {
    let seconds: i64 = seconds.trim().parse().ok()?;
    DateTime::from_timestamp(seconds, 0)
}

/// `+<digits>` when `digits` is a plausible international number written without the plus,
/// as WhatsApp ids are; `None` otherwise (group ids, user ids, empty strings).
pub(crate) fn e164_from_digits(digits: &str) -> Option<String> {
    let digits = digits.trim().trim_start_matches('+');
    let plausible_length = (7..=15).contains(&digits.len());
    (plausible_length && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| format!("+{digits}"))
}
