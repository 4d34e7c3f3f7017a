//! Tracking tokens: `/t/o/{token}` (open pixel), `/t/c/{token}` (click redirect) and
//! `/u/{token}` (unsubscribe). A token is `base64url(payload).base64url(tag)` where the tag
//! is HMAC-SHA256 of the payload under the tracking key, truncated to 128 bits and checked
//! in constant time; a changed payload (another URL, another message) does not verify.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::NurtureError;
use crate::store::Store;

type HmacSha256 = Hmac<Sha256>;

const TAG_BYTES: usize = 16;

/// What a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Open { outbox_id: String },
    Click { outbox_id: String, url: String },
    Unsubscribe { outbox_id: String },
}

#[derive(Clone)]
pub struct TrackingKey(Vec<u8>);

impl std::fmt::Debug for TrackingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackingKey([redacted])")
    }
}

impl TrackingKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.to_vec())
    }

    /// The configured key, or the store's generated one (made on first use), so every
    /// node of a deployment signs and verifies alike.
    pub async fn resolve(store: &Store, configured: &str) -> Result<Self, NurtureError> {
        if !configured.is_empty() {
            return Ok(Self::new(configured.as_bytes()));
        }
        let mut fresh = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO nurture_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind("tracking_key")
        .bind(hex::encode(fresh))
        .execute(store.pool())
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM nurture_settings WHERE name = $1")
                .bind("tracking_key")
                .fetch_one(store.pool())
                .await?;
        Ok(Self::new(stored.as_bytes()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
    }

    pub fn sign(&self, token: &Token) -> String {
        let payload = match token {
            Token::Open { outbox_id } => format!("o\n{outbox_id}"),
            Token::Click { outbox_id, url } => format!("c\n{outbox_id}\n{url}"),
            Token::Unsubscribe { outbox_id } => format!("u\n{outbox_id}"),
        };
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        )
    }

    /// The token's content when its tag verifies.
    pub fn verify(&self, token: &str) -> Option<Token> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_truncated_left(&tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let mut parts = payload.splitn(3, '\n');
        let kind = parts.next()?;
        let outbox_id = parts.next()?.to_owned();
        match (kind, parts.next()) {
            ("o", None) => Some(Token::Open { outbox_id }),
            ("u", None) => Some(Token::Unsubscribe { outbox_id }),
            ("c", Some(url)) => Some(Token::Click {
                outbox_id,
                url: url.to_owned(),
            }),
            _ => None,
        }
    }
}

/// User agents of mail scanners and link checkers that fetch everything in a message.
const SCANNERS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "trendmicro",
    "forcepoint",
    "safelinks",
    "ms-office",
    "microsoft office",
    "bot",
    "crawler",
    "spider",
    "scanner",
    "python-requests",
    "curl/",
    "wget/",
    "go-http-client",
    "headlesschrome",
];

/// Whether a fetch looks like a machine's: a scanner's user agent, or within
/// `bot_open_secs` of the message being sent.
pub fn looks_like_bot(
    user_agent: &str,
    seconds_since_sent: Option<i64>,
    bot_open_secs: u64,
) -> bool {
    let agent = user_agent.to_ascii_lowercase();
    agent.trim().is_empty()
        || SCANNERS.iter().any(|scanner| agent.contains(scanner))
        || seconds_since_sent.is_some_and(|s| s < bot_open_secs as i64)
}

/// The transparent 1×1 GIF answered for every open.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_any_change_is_refused() {
        let key = TrackingKey::new(b"k");
        let click = Token::Click {
            outbox_id: "m1".into(),
            url: "https://example.com/a?b=c".into(),
        };
        let signed = key.sign(&click);
        assert_eq!(key.verify(&signed), Some(click));
        // Another URL under the same tag.
        let (_, tag) = signed.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode("c\nm1\nhttps://evil.test/")
        );
        assert_eq!(key.verify(&forged), None);
        assert_eq!(TrackingKey::new(b"other").verify(&signed), None);
        assert_eq!(key.verify("garbage"), None);
        let open = Token::Open {
            outbox_id: "m1".into(),
        };
        assert_eq!(key.verify(&key.sign(&open)), Some(open));
    }

    #[test]
    fn scanners_and_instant_opens_are_bots() {
        assert!(looks_like_bot("Barracuda Sentinel (EE)", Some(3600), 10));
        assert!(looks_like_bot("Mozilla/5.0", Some(2), 10));
        assert!(looks_like_bot("", Some(3600), 10));
        assert!(!looks_like_bot(
            "Mozilla/5.0 (Windows NT 10.0)",
            Some(60),
            10
        ));
    }
}
