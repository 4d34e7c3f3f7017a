//! Exact money: decimals parsed from JSON text or numbers, rounded half away from zero to
//! the currency's minor unit, and written back as the canonical text the store keeps.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value};

use super::BillingError;

/// An ISO 4217 code: three letters, kept upper-case.
pub fn currency(text: &str) -> Result<String, BillingError> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(BillingError::Invalid(format!(
            "currency `{text}`: expected a three-letter ISO 4217 code"
        )))
    }
}

/// Digits after the point of the currency's minor unit: none for the zero-decimal
/// currencies (JPY, KRW …), two for every other.
pub fn minor_digits(currency: &str) -> u32 {
    connectors::stripe::minor_digits(currency)
}

/// Rounds to the currency's minor unit, half away from zero, with trailing zeros kept
/// (`12.5` → `12.50`).
pub fn round(amount: Decimal, currency: &str) -> Decimal {
    let digits = minor_digits(currency);
    let mut rounded = amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(digits);
    rounded
}

/// The text an amount is stored and answered as.
pub fn text(amount: Decimal, currency: &str) -> String {
    round(amount, currency).to_string()
}

/// A decimal from JSON: a string such as `"12.50"` or a number; never through a float's
/// binary value (a JSON number is read from its text).
pub fn parse(field: &str, value: &Value) -> Result<Decimal, BillingError> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(BillingError::Invalid(format!(
                "`{field}`: expected a decimal number"
            )));
        }
    };
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_str(&text))
        .ok()
        .filter(|_| !text.contains(['e', 'E']))
        .ok_or_else(|| {
            BillingError::Invalid(format!(
                "`{field}`: `{text}` is not a decimal number such as 12.50"
            ))
        })
}

/// An optional decimal: absent or null is `None`.
pub fn parse_opt(field: &str, value: Option<&Value>) -> Result<Option<Decimal>, BillingError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse(field, value).map(Some),
    }
}

/// A stored decimal field of a record (missing or null is zero).
pub fn field(fields: &Map<String, Value>, name: &str) -> Decimal {
    fields
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| Decimal::from_str_exact(s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_round_half_away_from_zero_to_the_minor_unit() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(text(d("0.125"), "EUR"), "0.13");
        assert_eq!(text(d("-0.125"), "EUR"), "-0.13");
        assert_eq!(text(d("10"), "EUR"), "10.00");
        assert_eq!(text(d("1234.5"), "JPY"), "1235");
    }

    #[test]
    fn json_numbers_are_read_from_their_text_not_a_float() {
        let sum = parse("a", &json!(0.1)).unwrap() + parse("b", &json!("0.2")).unwrap();
        assert_eq!(sum.to_string(), "0.3");
        assert!(parse("a", &json!("1e3")).is_err());
        assert!(parse("a", &json!("ten")).is_err());
        assert!(parse("a", &json!(true)).is_err());
    }

    #[test]
    fn currency_codes_are_three_letters() {
        assert_eq!(currency("eur").unwrap(), "EUR");
        assert!(currency("EURO").is_err());
        assert!(currency("E1R").is_err());
    }
}
