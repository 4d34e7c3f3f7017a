//! Authenticity of the email providers' event webhooks, each by its own documented
//! signature: Mailgun's hex HMAC-SHA256 of `timestamp + token` under the webhook signing
//! key (tokens are single-use, since the body is not signed), SendGrid's Signed Event
//! Webhook (ECDSA P-256 over `timestamp + body`), and Amazon SNS carrying SES events
//! (RSA over the message's canonical string, with the key of the certificate named by
//! `SigningCertURL`, fetched over https from an SNS host only, and only for the topics
//! configured: anyone can have SNS sign the messages of a topic of their own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use subtle::ConstantTimeEq;
use x509_cert::der::DecodePem;
use x509_cert::spki::ObjectIdentifier;

use super::config::NurtureSection;
use crate::domain::value::format_timestamp;
use crate::store::StoreError;

pub const SENDGRID_SIGNATURE: &str = "X-Twilio-Email-Event-Webhook-Signature";
pub const SENDGRID_TIMESTAMP: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// rsaEncryption: the only key type SNS signs with.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A signing certificate is a few KiB; anything much larger is not one.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// Certificates kept (SNS names one per region and key rotation).
const MAX_CACHED_KEYS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("the timestamp is more than {0} s away from now")]
    Stale(i64),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token was used before for another event")]
    Replayed,
    #[error("the URL {0} is not https on an allowed SNS host")]
    UrlRefused(String),
    #[error("topic {0} is not in nurture.ses.sns_topic_arns")]
    UnknownTopic(String),
    /// The signing certificate or the subscription confirmation could not be had.
    #[error("SNS not reached: {0}")]
    Unreachable(String),
    #[error("signing certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(error: sqlx::Error) -> Self {
        WebhookError::Store(StoreError::from(error))
    }
}

/// What each provider's webhook is checked with; a provider without one is not served.
#[derive(Default)]
pub struct WebhookVerifiers {
    pub mailgun: Option<Vec<u8>>,
    pub sendgrid: Option<SendGridKey>,
    pub sns: Option<SnsVerifier>,
}

impl WebhookVerifiers {
    pub fn from_config(section: &NurtureSection) -> Result<Self, String> {
        let mailgun = match section.mailgun.webhook_signing_key_env.as_str() {
            "" => None,
            name => Some(
                std::env::var(name)
                    .map_err(|_| {
                        format!("nurture.mailgun.webhook_signing_key_env: {name} is not set")
                    })?
                    .into_bytes(),
            ),
        };
        let sendgrid = match section.sendgrid.webhook_public_key.trim() {
            "" => None,
            key => Some(
                SendGridKey::parse(key)
                    .map_err(|e| format!("nurture.sendgrid.webhook_public_key: {e}"))?,
            ),
        };
        Ok(Self {
            mailgun,
            sendgrid,
            sns: SnsVerifier::new(section)?,
        })
    }
}

fn check_timestamp(
    timestamp: &str,
    now: DateTime<Utc>,
    tolerance: i64,
) -> Result<(), WebhookError> {
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::Malformed("the timestamp is not Unix seconds".into()))?;
    if (now.timestamp() - seconds).abs() > tolerance {
        return Err(WebhookError::Stale(tolerance));
    }
    Ok(())
}

// ---------------------------------------------------------------- Mailgun

/// Checks the `signature` object of a Mailgun webhook body (`{timestamp, token,
/// signature}`); answers its token, which the caller must then spend (`spend_token`).
pub fn verify_mailgun(
    key: &[u8],
    body: &Value,
    now: DateTime<Utc>,
    tolerance: i64,
) -> Result<String, WebhookError> {
    let block = body
        .get("signature")
        .ok_or(WebhookError::Missing("signature"))?;
    let field = |name: &'static str| match block.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        _ => Err(WebhookError::Missing(name)),
    };
    let timestamp = field("timestamp")?;
    let token = field("token")?;
    let given = field("signature")?;
    check_timestamp(&timestamp, now, tolerance)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| WebhookError::BadSignature)?;
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    if !bool::from(
        expected
            .as_bytes()
            .ct_eq(given.trim().to_ascii_lowercase().as_bytes()),
    ) {
        return Err(WebhookError::BadSignature);
    }
    Ok(token)
}

/// How a token was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    First,
    /// Seen before with this very body: a redelivery, already processed.
    Again,
}

/// Records `token` as used for `body`, in the caller's transaction (so it is spent only
/// if the events are kept). A token seen before with another body is `Replayed`: the
/// signature does not cover the body, so that is someone reusing a captured signature.
pub async fn spend_token(
    conn: &mut AnyConnection,
    provider: &str,
    token: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: i64,
) -> Result<TokenUse, WebhookError> {
    // A token's timestamp is within `tolerance` of its first sighting, so after twice
    // that it can no longer pass the timestamp check and need not be remembered.
    sqlx::query("DELETE FROM email_webhook_tokens WHERE seen_at < $1")
        .bind(format_timestamp(
            now - chrono::Duration::seconds(2 * tolerance),
        ))
        .execute(&mut *conn)
        .await?;
    let digest = hex::encode(Sha256::digest(body));
    let inserted = sqlx::query(
        "INSERT INTO email_webhook_tokens (provider, token, body_sha256, seen_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (provider, token) DO NOTHING",
    )
    .bind(provider)
    .bind(token)
    .bind(&digest)
    .bind(format_timestamp(now))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(TokenUse::First);
    }
    let seen: Option<String> = sqlx::query_scalar(
        "SELECT body_sha256 FROM email_webhook_tokens WHERE provider = $1 AND token = $2",
    )
    .bind(provider)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?;
    match seen {
        Some(earlier) if earlier == digest => Ok(TokenUse::Again),
        _ => Err(WebhookError::Replayed),
    }
}

// ---------------------------------------------------------------- SendGrid

/// The Signed Event Webhook's verification key.
#[derive(Clone)]
pub struct SendGridKey(p256::ecdsa::VerifyingKey);

impl SendGridKey {
    /// The key as SendGrid shows it (base64 of the DER SubjectPublicKeyInfo); a PEM
    /// `PUBLIC KEY` block is taken too.
    pub fn parse(text: &str) -> Result<Self, String> {
        let base64: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .flat_map(|line| line.split_whitespace())
            .collect();
        let der = STANDARD
            .decode(base64)
            .map_err(|e| format!("not base64: {e}"))?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map(Self)
            .map_err(|e| format!("not a P-256 public key: {e}"))
    }
}

/// Checks SendGrid's headers: the base64 DER ECDSA signature of `timestamp + body`.
pub fn verify_sendgrid(
    key: &SendGridKey,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: i64,
) -> Result<(), WebhookError> {
    let timestamp = timestamp.ok_or(WebhookError::Missing(SENDGRID_TIMESTAMP))?;
    let signature = signature.ok_or(WebhookError::Missing(SENDGRID_SIGNATURE))?;
    check_timestamp(timestamp, now, tolerance)?;
    let der = STANDARD
        .decode(signature.trim())
        .map_err(|_| WebhookError::BadSignature)?;
    let signature =
        p256::ecdsa::Signature::from_der(&der).map_err(|_| WebhookError::BadSignature)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.0
        .verify(&signed, &signature)
        .map_err(|_| WebhookError::BadSignature)
}

// ---------------------------------------------------------------- Amazon SNS

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsKind {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// A verified SNS message.
#[derive(Debug, Clone)]
pub struct SnsMessage {
    pub kind: SnsKind,
    pub topic_arn: String,
    /// The notification's payload (for SES, the event as JSON text).
    pub message: String,
    pub subscribe_url: Option<String>,
}

fn text<'a>(message: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, WebhookError> {
    message
        .get(key)
        .and_then(Value::as_str)
        .ok_or(WebhookError::Missing(key))
}

/// The string SNS signs: the documented fields of the message's type in byte order of
/// their names, each as `name\nvalue\n` (a notification's `Subject` only when present).
pub fn sns_string_to_sign(message: &Map<String, Value>) -> Result<String, WebhookError> {
    let fields: &[&'static str] = match text(message, "Type")? {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        other => {
            return Err(WebhookError::Malformed(format!(
                "unknown SNS message type {other}"
            )));
        }
    };
    let mut signed = String::new();
    for &field in fields {
        match message.get(field).and_then(Value::as_str) {
            Some(value) => {
                signed.push_str(field);
                signed.push('\n');
                signed.push_str(value);
                signed.push('\n');
            }
            None if field == "Subject" => {}
            None => return Err(WebhookError::Missing(field)),
        }
    }
    Ok(signed)
}

/// Whether `host` matches `pattern`, where `*` stands for exactly one DNS label.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim().split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern.iter().zip(&host).all(|(p, h)| {
            !h.is_empty()
                && if *p == "*" {
                    h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                } else {
                    p.eq_ignore_ascii_case(h)
                }
        })
}

/// The RSA public key (PKCS#1 `RSAPublicKey`, as ring takes it) of a PEM certificate.
fn rsa_key_of(pem: &[u8]) -> Result<Vec<u8>, WebhookError> {
    let certificate = x509_cert::Certificate::from_pem(pem)
        .map_err(|e| WebhookError::Certificate(e.to_string()))?;
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(WebhookError::Certificate(format!(
            "key algorithm {} is not RSA",
            spki.algorithm.oid
        )));
    }
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| WebhookError::Certificate("key is not whole bytes".into()))
}

/// Verifies SNS messages for the configured topics, fetching and caching signing keys.
pub struct SnsVerifier {
    client: reqwest::Client,
    hosts: Vec<String>,
    topics: Vec<String>,
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsVerifier {
    /// `None` when no topic is configured (SES webhooks off).
    pub fn new(section: &NurtureSection) -> Result<Option<Self>, String> {
        let ses = &section.ses;
        if ses.sns_topic_arns.is_empty() {
            return Ok(None);
        }
        if ses.sns_cert_hosts.is_empty() {
            return Err("nurture.ses.sns_cert_hosts is empty".into());
        }
        // SNS answers these itself; a redirect could lead off the allowed hosts.
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(ses.timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none());
        if !ses.sns_ca_file.is_empty() {
            let pem = std::fs::read(&ses.sns_ca_file)
                .map_err(|e| format!("nurture.ses.sns_ca_file {}: {e}", ses.sns_ca_file))?;
            let root = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("nurture.ses.sns_ca_file {}: {e}", ses.sns_ca_file))?;
            builder = builder.add_root_certificate(root);
        }
        Ok(Some(Self {
            client: builder.build().map_err(|e| format!("nurture.ses: {e}"))?,
            hosts: ses.sns_cert_hosts.clone(),
            topics: ses.sns_topic_arns.clone(),
            keys: Mutex::new(HashMap::new()),
        }))
    }

    /// `url` parsed, when it is https on an allowed host without credentials.
    fn allowed(&self, url: &str) -> Result<reqwest::Url, WebhookError> {
        let refused = || WebhookError::UrlRefused(url.chars().take(200).collect());
        let parsed = reqwest::Url::parse(url).map_err(|_| refused())?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let ok = parsed.scheme() == "https"
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && self
                .hosts
                .iter()
                .any(|pattern| host_matches(pattern, &host));
        if ok { Ok(parsed) } else { Err(refused()) }
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        match self.keys.lock() {
            Ok(keys) => keys.get(url).cloned(),
            Err(poisoned) => poisoned.into_inner().get(url).cloned(),
        }
    }

    async fn key(&self, url: &str) -> Result<Arc<Vec<u8>>, WebhookError> {
        if let Some(key) = self.cached(url) {
            return Ok(key);
        }
        let parsed = self.allowed(url)?;
        let unreachable = |e: reqwest::Error| WebhookError::Unreachable(e.to_string());
        let response = self.client.get(parsed).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(WebhookError::Unreachable(format!(
                "the certificate URL answered {}",
                response.status()
            )));
        }
        let pem = response.bytes().await.map_err(unreachable)?;
        if pem.len() > MAX_CERTIFICATE_BYTES {
            return Err(WebhookError::Certificate("too large".into()));
        }
        let key = Arc::new(rsa_key_of(&pem)?);
        let mut keys = match self.keys.lock() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(url.to_owned(), key.clone());
        Ok(key)
    }

    /// Checks the message's topic and signature (SignatureVersion 1: SHA1withRSA, 2:
    /// SHA256withRSA).
    pub async fn verify(&self, body: &[u8]) -> Result<SnsMessage, WebhookError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Malformed(format!("not an SNS message: {e}")))?;
        let message = value
            .as_object()
            .ok_or_else(|| WebhookError::Malformed("not an SNS message".into()))?;
        let topic = text(message, "TopicArn")?;
        if !self.topics.iter().any(|t| t == topic) {
            return Err(WebhookError::UnknownTopic(
                topic.chars().take(200).collect(),
            ));
        }
        let algorithm: &'static dyn ring::signature::VerificationAlgorithm =
            match message.get("SignatureVersion").and_then(Value::as_str) {
                Some("1") => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                Some("2") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                _ => return Err(WebhookError::Missing("SignatureVersion")),
            };
        let signature = STANDARD
            .decode(text(message, "Signature")?)
            .map_err(|_| WebhookError::BadSignature)?;
        let signed = sns_string_to_sign(message)?;
        let key = self.key(text(message, "SigningCertURL")?).await?;
        ring::signature::UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| WebhookError::BadSignature)?;
        let kind = match text(message, "Type")? {
            "Notification" => SnsKind::Notification,
            "SubscriptionConfirmation" => SnsKind::SubscriptionConfirmation,
            _ => SnsKind::UnsubscribeConfirmation,
        };
        Ok(SnsMessage {
            kind,
            topic_arn: topic.to_owned(),
            message: text(message, "Message")?.to_owned(),
            subscribe_url: message
                .get("SubscribeURL")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Confirms a subscription by visiting its `SubscribeURL` (same host rule).
    pub async fn confirm(&self, subscribe_url: &str) -> Result<(), WebhookError> {
        let parsed = self.allowed(subscribe_url)?;
        let response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| WebhookError::Unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(WebhookError::Unreachable(format!(
                "the subscribe URL answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mailgun_signatures_are_checked_with_their_timestamp() {
        let key = b"key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
        let now = Utc::now();
        let timestamp = now.timestamp().to_string();
        let sign = |timestamp: &str, token: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(format!("{timestamp}{token}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        let body = |timestamp: &str, token: &str, signature: &str| {
            json!({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                   "event-data": {"event": "failed"}})
        };
        let good = body(&timestamp, "tok-1", &sign(&timestamp, "tok-1"));
        assert_eq!(verify_mailgun(key, &good, now, 300).unwrap(), "tok-1");
        // Another token under the same signature, another key, an old timestamp.
        let swapped = body(&timestamp, "tok-2", &sign(&timestamp, "tok-1"));
        assert!(matches!(
            verify_mailgun(key, &swapped, now, 300),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_mailgun(b"other", &good, now, 300),
            Err(WebhookError::BadSignature)
        ));
        let old = (now.timestamp() - 301).to_string();
        let stale = body(&old, "tok-3", &sign(&old, "tok-3"));
        assert!(matches!(
            verify_mailgun(key, &stale, now, 300),
            Err(WebhookError::Stale(300))
        ));
        assert!(matches!(
            verify_mailgun(key, &json!({"event-data": {}}), now, 300),
            Err(WebhookError::Missing("signature"))
        ));
    }

    #[test]
    fn sns_canonical_strings_follow_the_documented_fields() {
        let notification = json!({"Type": "Notification", "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses", "Message": "{\"a\":1}\nx",
            "Timestamp": "2025-03-04T10:21:07.000Z", "SignatureVersion": "1",
            "Signature": "sig", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"});
        assert_eq!(
            sns_string_to_sign(notification.as_object().unwrap()).unwrap(),
            "Message\n{\"a\":1}\nx\nMessageId\nm-1\nTimestamp\n2025-03-04T10:21:07.000Z\n\
             TopicArn\narn:aws:sns:us-east-1:123456789012:ses\nType\nNotification\n"
        );
        let mut with_subject = notification.as_object().unwrap().clone();
        with_subject.insert("Subject".into(), json!("Bounce"));
        assert!(
            sns_string_to_sign(&with_subject)
                .unwrap()
                .contains("MessageId\nm-1\nSubject\nBounce\nTimestamp\n")
        );
        let confirmation = json!({"Type": "SubscriptionConfirmation", "MessageId": "m-2",
            "Token": "t", "TopicArn": "arn", "Message": "confirm",
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "Timestamp": "2025-03-04T10:21:07.000Z"});
        assert_eq!(
            sns_string_to_sign(confirmation.as_object().unwrap()).unwrap(),
            "Message\nconfirm\nMessageId\nm-2\nSubscribeURL\n\
             https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2025-03-04T10:21:07.000Z\nToken\nt\nTopicArn\narn\n\
             Type\nSubscriptionConfirmation\n"
        );
        let mut incomplete = confirmation.as_object().unwrap().clone();
        incomplete.remove("Token");
        assert!(matches!(
            sns_string_to_sign(&incomplete),
            Err(WebhookError::Missing("Token"))
        ));
    }

    #[test]
    fn sns_hosts_match_one_label_per_star() {
        let pattern = "sns.*.amazonaws.com";
        assert!(host_matches(pattern, "sns.us-east-1.amazonaws.com"));
        assert!(host_matches(pattern, "SNS.eu-west-1.amazonaws.com"));
        assert!(!host_matches(pattern, "sns.amazonaws.com"));
        assert!(!host_matches(
            pattern,
            "sns.us-east-1.amazonaws.com.evil.test"
        ));
        assert!(!host_matches(pattern, "sns.evil.test.amazonaws.com"));
        assert!(!host_matches(pattern, "sns..amazonaws.com"));
        assert!(!host_matches(pattern, "evilsns.us-east-1.amazonaws.com"));
        assert!(host_matches("127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn a_sendgrid_key_is_taken_as_sendgrid_shows_it_or_as_pem() {
        // A P-256 SubjectPublicKeyInfo (openssl ecparam -name prime256v1 -genkey | openssl
        // ec -pubout -outform DER | base64).
        let shown = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeqJtdvZXDK6WqyJxte/HMiU+epqJ\
                     VJMC/GXQjQeueYqXKZuPA/AcZEBbwmx7IRPL9xuHGMZZJVkg5JW1cCQsjw==";
        assert!(SendGridKey::parse(shown).is_ok());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &shown[..64],
            &shown[64..]
        );
        assert!(SendGridKey::parse(&pem).is_ok());
        assert!(SendGridKey::parse("bm90IGEga2V5").is_err());
    }
}
