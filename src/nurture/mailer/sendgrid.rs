//! SendGrid's v3 Mail Send API: `POST {base}/v3/mail/send`, `Authorization: Bearer KEY`,
//! a JSON body of personalizations, from, subject, content (text/plain then text/html),
//! headers and custom_args; `202 Accepted` with the message id in `X-Message-Id`.

use async_trait::async_trait;
use serde_json::json;

use super::{
    Accepted, MailError, Mailer, MailerConfigError, OutgoingEmail, classify_status, http_client,
    secret_from_env, transport_error,
};
use crate::nurture::config::ApiSection;

pub struct SendGrid {
    client: reqwest::Client,
    url: String,
    key: String,
}

impl SendGrid {
    pub fn new(section: &ApiSection) -> Result<Self, MailerConfigError> {
        Ok(Self {
            client: http_client("sendgrid", section.timeout_secs)?,
            url: format!("{}/v3/mail/send", section.base_url.trim_end_matches('/')),
            key: secret_from_env("sendgrid", &section.api_key_env)?,
        })
    }
}

/// `Name <a@b>` as SendGrid's `{email, name}`.
pub(crate) fn email_object(mailbox: &str) -> serde_json::Value {
    let address = crate::nurture::config::address_of(mailbox);
    let name = mailbox
        .split('<')
        .next()
        .map(|n| n.trim().trim_matches('"'))
        .filter(|n| !n.is_empty() && mailbox.contains('<'));
    match name {
        Some(name) => json!({"email": address, "name": name}),
        None => json!({"email": address}),
    }
}

#[async_trait]
impl Mailer for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError> {
        let mut headers = serde_json::Map::new();
        for (name, value) in &email.headers {
            headers.insert(name.clone(), json!(value));
        }
        // SendGrid sets its own Message-ID; ours travels as a header it passes through.
        headers.insert("X-Leadgate-Message-Id".into(), json!(email.message_id));
        let body = json!({
            "personalizations": [{"to": [email_object(&email.to)]}],
            "from": email_object(&email.from),
            "subject": email.subject,
            "content": [
                {"type": "text/plain", "value": email.text},
                {"type": "text/html", "value": email.html},
            ],
            "headers": headers,
            "custom_args": {"leadgate_outbox_id": email.outbox_id},
        });
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error("SendGrid", e))?;
        let status = response.status();
        if status.is_success() {
            let id = response
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| email.message_id.clone());
            return Ok(Accepted { provider_id: id });
        }
        let text = response.text().await.unwrap_or_default();
        Err(classify_status("SendGrid", status, &text))
    }
}
