//! Cells as people make them: Excel serial dates, numbers typed with thousands
//! separators, phone numbers stored as numbers.

use chrono::{Duration, NaiveDate, NaiveDateTime, Timelike};

/// Renders a numeric cell the way a person reads it: integral values without `.0` or
/// exponent (a phone number stored as a number keeps all its digits), others shortest.
pub fn format_number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e17 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// ISO 8601 text for a date-time: a date alone when there is no time of day.
pub fn format_datetime(value: NaiveDateTime) -> String {
    if value.time().num_seconds_from_midnight() == 0 && value.time().nanosecond() == 0 {
        value.date().format("%Y-%m-%d").to_string()
    } else {
        value.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// An Excel serial date (1900 system, days since 1899-12-30) as ISO text, when the text
/// is a plausible serial (1900-01-01 to 9999-12-31).
pub fn serial_to_iso(text: &str) -> Option<String> {
    let serial: f64 = text.trim().parse().ok()?;
    if !(1.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_hms_opt(0, 0, 0)?;
    let millis = (serial * 86_400_000.0).round() as i64;
    Some(format_datetime(epoch + Duration::milliseconds(millis)))
}

/// A number typed with thousands separators (`1,234,567`, `1.234.567,89`, `1 234`,
/// `1'234.5`) as plain decimal text; `None` when it is not such a number.
pub fn normalize_number(text: &str) -> Option<String> {
    let t: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t.as_str()),
    };
    if digits.is_empty()
        || !digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
    {
        return None;
    }
    let last_comma = digits.rfind(',');
    let last_dot = digits.rfind('.');
    // The decimal mark is the later of the two when both appear; alone, a mark followed
    // by exactly three digits (and repeated, or after 1-3 digits) is a thousands mark.
    let decimal = match (last_comma, last_dot) {
        (Some(c), Some(d)) => Some(if c > d { ',' } else { '.' }),
        (Some(_), None) => single_mark_is_decimal(digits, ',').then_some(','),
        (None, Some(_)) => single_mark_is_decimal(digits, '.').then_some('.'),
        (None, None) => None,
    };
    let mut out = String::from(sign);
    let mut seen_decimal = false;
    for c in digits.chars() {
        match c {
            '0'..='9' => out.push(c),
            _ if Some(c) == decimal => {
                if seen_decimal {
                    return None;
                }
                seen_decimal = true;
                out.push('.');
            }
            _ => {}
        }
    }
    let groups_ok = digits.split([',', '.']).skip(1).all(|g| !g.is_empty());
    groups_ok.then_some(out)
}

fn single_mark_is_decimal(digits: &str, mark: char) -> bool {
    let parts: Vec<&str> = digits.split(mark).collect();
    if parts.len() > 2 {
        return false; // 1,234,567
    }
    let (head, tail) = (parts[0], parts[1]);
    !(tail.len() == 3 && !head.is_empty() && head.len() <= 3 && head != "0")
}

/// A phone number as typed or as a number cell: a number in exponent form (how a number
/// cell leaks out of some exports) becomes its digits; other text is kept as is.
pub fn normalize_phone(text: &str) -> String {
    let t = text.trim();
    if t.contains(['e', 'E'])
        && let Ok(value) = t.parse::<f64>()
        && value.is_finite()
        && value.fract() == 0.0
    {
        return format_number(value);
    }
    if let Some(int) = t.strip_suffix(".0")
        && !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
    {
        return int.to_owned();
    }
    t.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_wrote_them() {
        assert_eq!(format_number(442_079_460_958.0), "442079460958");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(normalize_number("1,234,567").as_deref(), Some("1234567"));
        assert_eq!(
            normalize_number("1.234.567,89").as_deref(),
            Some("1234567.89")
        );
        assert_eq!(normalize_number("1 234,5").as_deref(), Some("1234.5"));
        assert_eq!(normalize_number("12,5").as_deref(), Some("12.5"));
        assert_eq!(normalize_number("1,234").as_deref(), Some("1234"));
        assert_eq!(normalize_number("0.125").as_deref(), Some("0.125"));
        assert_eq!(normalize_number("-3.5").as_deref(), Some("-3.5"));
        assert_eq!(normalize_number("abc"), None);
        assert_eq!(normalize_number("1,,2"), None);
    }

    #[test]
    fn serial_dates_become_iso() {
        assert_eq!(serial_to_iso("45292").as_deref(), Some("2024-01-01"));
        assert_eq!(
            serial_to_iso("45292.5").as_deref(),
            Some("2024-01-01T12:00:00")
        );
        assert_eq!(serial_to_iso("hello"), None);
        assert_eq!(serial_to_iso("0"), None);
    }

    #[test]
    fn phone_numbers_keep_their_digits() {
        assert_eq!(normalize_phone("4.42079460958E+11"), "442079460958");
        assert_eq!(normalize_phone("4915112345678.0"), "4915112345678");
        assert_eq!(normalize_phone("+44 20 7946 0958"), "+44 20 7946 0958");
    }
}
