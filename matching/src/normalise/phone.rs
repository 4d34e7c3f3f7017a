//! Phone numbers to E.164 via the `phonenumber` crate (libphonenumber metadata).

use crate::error::NormaliseError;
use phonenumber::{Mode, country};

/// Parse `raw` with `default_region` (ISO alpha-2, e.g. "GB") and return E.164.
///
/// Spreadsheets often mangle numbers: the trunk `0` is lost ("2079460958") or
/// the `+` of an international number is lost ("442079460958"). When the
/// plain parse is not a valid number we retry those repairs and keep the
/// first one that validates.
pub fn normalise_phone(raw: &str, default_region: &str) -> Result<String, NormaliseError> {
    let region: country::Id = default_region
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| NormaliseError::PhoneRegion(default_region.to_string()))?;
    let s = raw.trim();
    if s.is_empty() {
        return Err(NormaliseError::Empty);
    }
    let first = phonenumber::parse(Some(region), s);
    if let Ok(n) = &first
        && n.is_valid()
    {
        return Ok(n.format().mode(Mode::E164).to_string());
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let starts_clean = s.starts_with(|c: char| c.is_ascii_digit());
    if starts_clean && digits.len() >= 6 {
        for candidate in [format!("0{digits}"), format!("+{digits}")] {
            if let Ok(n) = phonenumber::parse(Some(region), &candidate)
                && n.is_valid()
            {
                return Ok(n.format().mode(Mode::E164).to_string());
            }
        }
    }
    match first {
        Ok(_) => Err(NormaliseError::PhoneInvalid),
        Err(_) => Err(NormaliseError::PhoneUnparseable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_formats() {
        assert_eq!(
            normalise_phone("020 7946 0958", "GB").unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalise_phone("(02) 9374 4000", "AU").unwrap(),
            "+61293744000"
        );
        assert_eq!(
            normalise_phone("0412 345 678", "au").unwrap(),
            "+61412345678"
        );
        assert_eq!(
            normalise_phone("(415) 555-2671", "US").unwrap(),
            "+14155552671"
        );
    }

    #[test]
    fn international_overrides_region() {
        assert_eq!(
            normalise_phone("+61 412 345 678", "GB").unwrap(),
            "+61412345678"
        );
        assert_eq!(
            normalise_phone("0044 20 7946 0958", "GB").unwrap(),
            "+442079460958"
        );
    }

    #[test]
    fn repairs_lost_zero_and_plus() {
        assert_eq!(
            normalise_phone("2079460958", "GB").unwrap(),
            "+442079460958"
        );
        assert_eq!(normalise_phone("412345678", "AU").unwrap(), "+61412345678");
        assert_eq!(
            normalise_phone("442079460958", "GB").unwrap(),
            "+442079460958"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(normalise_phone("", "GB"), Err(NormaliseError::Empty));
        assert!(normalise_phone("not a phone", "GB").is_err());
        assert!(normalise_phone("123", "GB").is_err());
        assert!(matches!(
            normalise_phone("0207", "XX"),
            Err(NormaliseError::PhoneRegion(_))
        ));
    }
}
