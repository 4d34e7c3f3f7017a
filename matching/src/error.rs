//! Error types. Normalisation errors carry a reason so callers can keep the
//! raw value and flag it for a steward instead of dropping it.

use thiserror::Error;

/// Why a raw value could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NormaliseError {
    #[error("value is empty")]
    Empty,
    #[error("email has no '@'")]
    EmailNoAt,
    #[error("email local part is empty or longer than 64 characters")]
    EmailLocalPart,
    #[error("email domain is invalid: {0}")]
    EmailDomain(&'static str),
    #[error("email contains whitespace or control characters")]
    EmailWhitespace,
    #[error("unknown phone region {0:?}")]
    PhoneRegion(String),
    #[error("phone number could not be parsed")]
    PhoneUnparseable,
    #[error("phone number parsed but is not a valid number")]
    PhoneInvalid,
    #[error("unknown country {0:?}")]
    UnknownCountry(String),
    #[error("date could not be parsed: {0:?}")]
    Date(String),
}

/// Why a [`crate::MatchConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("field {field}: m and u must be in (0, 1], got m={m} u={u}")]
    Probability { field: String, m: f64, u: f64 },
    #[error("field {field}: levels must have strictly descending `at_least` in [0, 1]")]
    LevelOrder { field: String },
    #[error("merge threshold {merge} is below review threshold {review}")]
    Thresholds { merge: f64, review: f64 },
    #[error("field {0} is configured twice")]
    DuplicateField(String),
}
