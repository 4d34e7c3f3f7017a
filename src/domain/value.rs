//! Field values as the store keeps them: each JSON value is checked against its field's
//! type once, at the write path, and bound with the matching SQL type.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value;

use super::kind::{FieldDef, FieldType};

/// A value ready to bind. NULLs keep their type because PostgreSQL checks parameter types.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null(FieldType),
    Text(String),
    Int(i64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("field `{field}`: {reason}")]
pub struct InvalidValue {
    pub field: String,
    pub reason: String,
}

/// The one timestamp format of the store: UTC, microseconds, sortable as text.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now_timestamp() -> String {
    format_timestamp(Utc::now())
}

impl SqlValue {
    pub fn from_json(def: &FieldDef, value: &Value) -> Result<Self, InvalidValue> {
        let invalid = |reason: &str| InvalidValue {
            field: def.name.to_owned(),
            reason: reason.to_owned(),
        };
        if value.is_null() {
            return Ok(SqlValue::Null(def.ty));
        }
        match def.ty {
            FieldType::Text => match value {
                Value::String(s) => Ok(SqlValue::Text(s.clone())),
                Value::Number(n) => Ok(SqlValue::Text(n.to_string())),
                Value::Bool(b) => Ok(SqlValue::Text(b.to_string())),
                _ => Err(invalid("expected text")),
            },
            FieldType::Integer => match value {
                Value::Number(n) => n
                    .as_i64()
                    .map(SqlValue::Int)
                    .ok_or_else(|| invalid("expected a whole number")),
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(SqlValue::Int)
                    .map_err(|_| invalid("expected a whole number")),
                _ => Err(invalid("expected a whole number")),
            },
            FieldType::Decimal => {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_owned(),
                    _ => return Err(invalid("expected a decimal number")),
                };
                canonical_decimal(&text)
                    .map(SqlValue::Text)
                    .ok_or_else(|| invalid("expected a decimal number such as 1234.50"))
            }
            FieldType::Bool => match value {
                Value::Bool(b) => Ok(SqlValue::Int(i64::from(*b))),
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                    Ok(SqlValue::Int(n.as_i64().unwrap_or_default()))
                }
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "1" | "on" => Ok(SqlValue::Int(1)),
                    "false" | "no" | "n" | "0" | "off" | "" => Ok(SqlValue::Int(0)),
                    _ => Err(invalid("expected true or false")),
                },
                _ => Err(invalid("expected true or false")),
            },
            FieldType::Json => match value {
                Value::Object(_) | Value::Array(_) => Ok(SqlValue::Text(value.to_string())),
                _ => Err(invalid("expected an object or an array")),
            },
            FieldType::Timestamp => value
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
                .map(|at| SqlValue::Text(format_timestamp(at.with_timezone(&Utc))))
                .ok_or_else(|| invalid("expected an RFC 3339 timestamp")),
            FieldType::Date => value
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok())
                .map(|date| SqlValue::Text(date.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| invalid("expected a date as YYYY-MM-DD")),
        }
    }

    /// The JSON form of a stored value, as answers and audit rows show it.
    pub fn to_json(&self) -> Value {
        match self {
            SqlValue::Null(_) => Value::Null,
            SqlValue::Text(s) => Value::String(s.clone()),
            SqlValue::Int(i) => Value::from(*i),
        }
    }
}

/// Converts what the store holds for a field into the JSON answers carry.
pub fn stored_to_json(ty: FieldType, text: Option<String>, int: Option<i64>) -> Value {
    match ty {
        FieldType::Integer => int.map(Value::from).unwrap_or(Value::Null),
        FieldType::Bool => int.map(|i| Value::Bool(i != 0)).unwrap_or(Value::Null),
        FieldType::Json => text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null),
        _ => text.map(Value::String).unwrap_or(Value::Null),
    }
}

/// `-12.50` stays `-12.50`; `+3` becomes `3`; anything else is refused.
fn canonical_decimal(text: &str) -> Option<String> {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let digits = unsigned.strip_prefix('-').unwrap_or(unsigned);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid = !whole.is_empty()
        && all_digits(whole)
        && all_digits(fraction)
        && (fraction.is_empty() != digits.contains('.'))
        && whole.len() + fraction.len() <= 38;
    valid.then(|| unsigned.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(ty: FieldType) -> FieldDef {
        FieldDef {
            name: "x",
            ty,
            secret: false,
        }
    }

    #[test]
    fn decimals_are_kept_exact_or_refused() {
        let d = def(FieldType::Decimal);
        assert_eq!(
            SqlValue::from_json(&d, &json!("1234.50")).unwrap(),
            SqlValue::Text("1234.50".into())
        );
        assert_eq!(
            SqlValue::from_json(&d, &json!("+3")).unwrap(),
            SqlValue::Text("3".into())
        );
        for bad in ["1,000", "1.", ".5", "abc", "1e5", "--1", ""] {
            assert!(SqlValue::from_json(&d, &json!(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_normalised_to_utc() {
        let value = SqlValue::from_json(
            &def(FieldType::Timestamp),
            &json!("2026-01-02T03:04:05+02:00"),
        )
        .unwrap();
        assert_eq!(value, SqlValue::Text("2026-01-02T01:04:05.000000Z".into()));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = SqlValue::from_json(&def(FieldType::Integer), &json!("twelve")).unwrap_err();
        assert_eq!(error.field, "x");
        assert!(SqlValue::from_json(&def(FieldType::Json), &json!("text")).is_err());
        assert!(SqlValue::from_json(&def(FieldType::Date), &json!("02/01/2026")).is_err());
    }

    #[test]
    fn nulls_keep_their_type() {
        assert_eq!(
            SqlValue::from_json(&def(FieldType::Integer), &Value::Null).unwrap(),
            SqlValue::Null(FieldType::Integer)
        );
    }
}
