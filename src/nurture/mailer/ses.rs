//! Amazon SES v2 `SendEmail`: `POST {base}/v2/email/outbound-emails` with a JSON body
//! whose content is the raw MIME message (so our Message-ID and List-Unsubscribe headers
//! travel as built), signed with AWS Signature Version 4 (service `ses`). The answer is
//! `{"MessageId": "…"}`. The base URL defaults to `https://email.{region}.amazonaws.com`.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Accepted, MailError, Mailer, MailerConfigError, OutgoingEmail, classify_status, http_client,
    secret_from_env, transport_error,
};
use crate::nurture::config::{ApiSection, address_of};

pub struct Ses {
    client: reqwest::Client,
    base: String,
    host: String,
    region: String,
    access_key: String,
    secret_key: String,
}

impl Ses {
    pub fn new(section: &ApiSection) -> Result<Self, MailerConfigError> {
        let base = if section.base_url.is_empty() {
            format!("https://email.{}.amazonaws.com", section.region)
        } else {
            section.base_url.trim_end_matches('/').to_owned()
        };
        let host = base
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MailerConfigError {
                section: "ses",
                reason: format!("base_url `{base}` is not an http(s) URL"),
            })?;
        Ok(Self {
            client: http_client("ses", section.timeout_secs)?,
            base,
            host,
            region: section.region.clone(),
            access_key: secret_from_env("ses", &section.api_key_env)?,
            secret_key: secret_from_env("ses", &section.secret_key_env)?,
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4's derived signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The `Authorization` header of a SigV4-signed POST with a JSON body, signing
/// `content-type`, `host` and `x-amz-date`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    access_key: &str,
    secret_key: &str,
    region: &str,
    service: &str,
    host: &str,
    path: &str,
    amz_date: &str,
    body: &[u8],
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let signed_headers = "content-type;host;x-amz-date";
    let canonical_request = format!(
        "POST\n{path}\n\ncontent-type:application/json\nhost:{host}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = hex::encode(hmac(
        &signing_key(secret_key, date, region, service),
        string_to_sign.as_bytes(),
    ));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

#[derive(Deserialize)]
struct SendEmailResponse {
    #[serde(rename = "MessageId")]
    message_id: String,
}

#[async_trait]
impl Mailer for Ses {
    fn name(&self) -> &'static str {
        "ses"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError> {
        let raw = super::to_message(email)?.formatted();
        let body = serde_json::to_vec(&json!({
            "FromEmailAddress": address_of(&email.from),
            "Destination": {"ToAddresses": [address_of(&email.to)]},
            "Content": {"Raw": {"Data": STANDARD.encode(raw)}},
        }))
        .map_err(|e| MailError::Permanent(e.to_string()))?;
        let path = "/v2/email/outbound-emails";
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let auth = authorization(
            &self.access_key,
            &self.secret_key,
            &self.region,
            "ses",
            &self.host,
            path,
            &amz_date,
            &body,
        );
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-amz-date", &amz_date)
            .header("authorization", auth)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error("SES", e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let id = serde_json::from_str::<SendEmailResponse>(&text)
                .map(|r| r.message_id)
                .unwrap_or_else(|_| email.message_id.clone());
            return Ok(Accepted { provider_id: id });
        }
        Err(classify_status("SES", status, &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_awss_documented_example() {
        // AWS's "Examples of how to derive a signing key for Signature Version 4".
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
