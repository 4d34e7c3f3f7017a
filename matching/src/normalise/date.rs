//! Dates of birth to a canonical `YYYYMMDD` digit string.
//!
//! Digits are kept even when the calendar date is impossible (a typo such as
//! month 13): the comparator can still credit a near miss.

use crate::error::NormaliseError;

/// Normalise a date. Accepts `YYYYMMDD`, `YYYY-MM-DD`/`YYYY/MM/DD` and
/// `DD/MM/YYYY` (or `MM/DD/YYYY` when `day_first` is false).
pub fn normalise_date(raw: &str, day_first: bool) -> Result<String, NormaliseError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(NormaliseError::Empty);
    }
    let err = || NormaliseError::Date(s.to_string());
    let parts: Vec<&str> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .collect();
    let (y, m, d) = match parts.as_slice() {
        [one] if one.len() == 8 => (&one[0..4], &one[4..6], &one[6..8]),
        [a, b, c] if a.len() == 4 => (*a, *b, *c),
        [a, b, c] if c.len() == 4 => {
            if day_first {
                (*c, *b, *a)
            } else {
                (*c, *a, *b)
            }
        }
        _ => return Err(err()),
    };
    let (mn, dn): (u32, u32) = (m.parse().map_err(|_| err())?, d.parse().map_err(|_| err())?);
    if y.len() != 4 || m.len() > 2 || d.len() > 2 || mn > 99 || dn > 99 {
        return Err(err());
    }
    Ok(format!("{y}{mn:02}{dn:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(normalise_date("19560409", true).unwrap(), "19560409");
        assert_eq!(normalise_date("1956-4-9", true).unwrap(), "19560409");
        assert_eq!(normalise_date("09/04/1956", true).unwrap(), "19560409");
        assert_eq!(normalise_date("04/09/1956", false).unwrap(), "19560409");
        assert_eq!(normalise_date("19561304", true).unwrap(), "19561304");
    }

    #[test]
    fn rejects() {
        assert_eq!(normalise_date(" ", true), Err(NormaliseError::Empty));
        assert!(normalise_date("1956", true).is_err());
        assert!(normalise_date("yesterday", true).is_err());
        assert!(normalise_date("1/2/56", true).is_err());
    }
}
