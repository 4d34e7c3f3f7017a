//! Shared signature helpers: HMAC computation, constant-time comparison, header parsing and
//! replay windows. Connectors build the provider-specific signed string and call these.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// Why a signed request was refused. Deliberately coarse: the HTTP layer answers 401 for all
/// of them and logs the variant, and the caller learns nothing that helps forge a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {header} is malformed: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp is {age_seconds}s from now, outside the {tolerance_seconds}s tolerance")]
    StaleTimestamp {
        age_seconds: i64,
        tolerance_seconds: i64,
    },
    #[error("no secret configured")]
    EmptySecret,
}

/// HMAC-SHA256 over the concatenation of `parts`, without building the concatenated message
/// (bodies can be large and the signed strings are prefix + body).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 over the concatenation of `parts` (Twilio still signs with SHA-1).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Lower-case hex HMAC-SHA256.
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha256(key, parts))
}

/// Standard base64 HMAC-SHA256.
pub fn hmac_sha256_base64(key: &[u8], parts: &[&[u8]]) -> String {
    BASE64.encode(hmac_sha256(key, parts))
}

/// Lower-case hex HMAC-SHA1.
pub fn hmac_sha1_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha1(key, parts))
}

/// Standard base64 HMAC-SHA1.
pub fn hmac_sha1_base64(key: &[u8], parts: &[&[u8]]) -> String {
    BASE64.encode(hmac_sha1(key, parts))
}

/// Lower-case hex SHA-256 of `data` (content hashes, fallback ids).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Constant-time equality; unequal lengths return false early, which leaks only the length
/// of a digest whose length is public anyway.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && bool::from(left.ct_eq(right))
}

/// Compares a computed digest with a hex digest from a header (either case), in constant time.
pub fn verify_hex(
    expected: &[u8],
    provided_hex: &str,
    header: &'static str,
) -> Result<(), SignatureError> {
    let provided =
        hex::decode(provided_hex.trim()).map_err(|_| SignatureError::MalformedHeader {
            header,
            reason: "not hex",
        })?;
    if constant_time_eq(expected, &provided) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Compares a computed digest with a base64 digest from a header, in constant time.
pub fn verify_base64(
    expected: &[u8],
    provided_base64: &str,
    header: &'static str,
) -> Result<(), SignatureError> {
    let provided =
        BASE64
            .decode(provided_base64.trim())
            .map_err(|_| SignatureError::MalformedHeader {
                header,
                reason: "not base64",
            })?;
    if constant_time_eq(expected, &provided) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Returns the header value or [`SignatureError::MissingHeader`]; blank counts as missing.
pub fn require_header<'a>(
    value: Option<&'a str>,
    header: &'static str,
) -> Result<&'a str, SignatureError> {
    match value.map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(SignatureError::MissingHeader(header)),
    }
}

/// Strips a scheme prefix such as `sha256=` or `v0=` from a signature header value.
pub fn strip_prefix<'a>(
    value: &'a str,
    prefix: &str,
    header: &'static str,
) -> Result<&'a str, SignatureError> {
    value
        .trim()
        .strip_prefix(prefix)
        .ok_or(SignatureError::MalformedHeader {
            header,
            reason: "unexpected signature scheme",
        })
}

/// Refuses an empty secret: an HMAC with an empty key is still an HMAC, and a missing
/// configuration value must not turn into "anyone who also uses the empty key passes".
pub fn require_secret(secret: &str) -> Result<&[u8], SignatureError> {
    if secret.is_empty() {
        Err(SignatureError::EmptySecret)
    } else {
        Ok(secret.as_bytes())
    }
}

/// Parses a Unix-seconds timestamp header and checks it lies within `tolerance` of `now` in
/// either direction (a clock ahead of ours is as suspicious as a replayed old request).
pub fn check_freshness(
    timestamp: &str,
    header: &'static str,
    now: DateTime<Utc>,
    tolerance: TimeDelta,
) -> Result<DateTime<Utc>, SignatureError> {
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::MalformedHeader {
            header,
            reason: "not Unix seconds",
        })?;
    let signed_at =
        DateTime::from_timestamp(seconds, 0).ok_or(SignatureError::MalformedHeader {
            header,
            reason: "timestamp out of range",
        })?;
    let age = now.signed_duration_since(signed_at);
    if age.abs() > tolerance {
        return Err(SignatureError::StaleTimestamp {
            age_seconds: age.num_seconds(),
            tolerance_seconds: tolerance.num_seconds(),
        });
    }
    Ok(signed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2 and RFC 2202 test case 2 (key "Jefe").
    #[test]
    fn hmac_matches_rfc_vectors() {
        let message: &[u8] = b"what do ya want for nothing?";
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[message]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_sha1_hex(b"Jefe", &[message]),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // Split input signs the same as the concatenation.
        assert_eq!(
            hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]),
            hmac_sha256(b"Jefe", &[message])
        );
    }

    #[test]
    fn encodings_round_trip_through_verification() {
        let digest = hmac_sha256(b"key", &[b"body"]);
        assert_eq!(
            verify_hex(&digest, &hmac_sha256_hex(b"key", &[b"body"]), "h"),
            Ok(())
        );
        assert_eq!(
            verify_hex(
                &digest,
                &hmac_sha256_hex(b"key", &[b"body"]).to_uppercase(),
                "h"
            ),
            Ok(())
        );
        assert_eq!(
            verify_base64(&digest, &hmac_sha256_base64(b"key", &[b"body"]), "h"),
            Ok(())
        );
        assert_eq!(
            verify_hex(&digest, &hmac_sha256_hex(b"other", &[b"body"]), "h"),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_hex(&digest, "zz", "h"),
            Err(SignatureError::MalformedHeader { .. })
        ));
        assert!(matches!(
            verify_base64(&digest, "***", "h"),
            Err(SignatureError::MalformedHeader { .. })
        ));
        // A truncated digest must not pass as a prefix match.
        assert_eq!(
            verify_hex(&digest, &hex::encode(&digest[..16]), "h"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn constant_time_eq_compares_lengths_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn headers_and_prefixes() {
        assert_eq!(require_header(Some(" x "), "h"), Ok("x"));
        assert_eq!(
            require_header(Some("  "), "h"),
            Err(SignatureError::MissingHeader("h"))
        );
        assert_eq!(
            require_header(None, "h"),
            Err(SignatureError::MissingHeader("h"))
        );
        assert_eq!(strip_prefix("sha256=ab", "sha256=", "h"), Ok("ab"));
        assert!(strip_prefix("sha1=ab", "sha256=", "h").is_err());
        assert_eq!(require_secret(""), Err(SignatureError::EmptySecret));
    }

    #[test]
    fn freshness_window_is_symmetric() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let tolerance = TimeDelta::seconds(300);
        assert!(check_freshness("1700000000", "t", now, tolerance).is_ok());
        assert!(check_freshness("1699999700", "t", now, tolerance).is_ok());
        assert!(matches!(
            check_freshness("1699999699", "t", now, tolerance),
            Err(SignatureError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check_freshness("1700000301", "t", now, tolerance),
            Err(SignatureError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check_freshness("soon", "t", now, tolerance),
            Err(SignatureError::MalformedHeader { .. })
        ));
        assert!(matches!(
            check_freshness("99999999999999999", "t", now, tolerance),
            Err(SignatureError::MalformedHeader { .. })
        ));
    }
}
