//! Mailgun's Messages API: `POST {base}/v3/{domain}/messages`, HTTP basic auth `api:KEY`,
//! a form-encoded body (`from`, `to`, `subject`, `text`, `html`, `h:` headers, `v:`
//! variables); the answer is JSON `{"id": "<…>", "message": "Queued. Thank you."}`.

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    Accepted, MailError, Mailer, MailerConfigError, OutgoingEmail, classify_status, http_client,
    secret_from_env, transport_error,
};
use crate::nurture::config::ApiSection;

pub struct Mailgun {
    client: reqwest::Client,
    url: String,
    key: String,
}

impl Mailgun {
    pub fn new(section: &ApiSection) -> Result<Self, MailerConfigError> {
        if section.domain.is_empty() {
            return Err(MailerConfigError {
                section: "mailgun",
                reason: "domain is empty".into(),
            });
        }
        Ok(Self {
            client: http_client("mailgun", section.timeout_secs)?,
            url: format!(
                "{}/v3/{}/messages",
                section.base_url.trim_end_matches('/'),
                section.domain
            ),
            key: secret_from_env("mailgun", &section.api_key_env)?,
        })
    }
}

#[derive(Deserialize)]
struct Queued {
    id: String,
}

#[async_trait]
impl Mailer for Mailgun {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError> {
        let mut form: Vec<(String, String)> = vec![
            ("from".into(), email.from.clone()),
            ("to".into(), email.to.clone()),
            ("subject".into(), email.subject.clone()),
            ("text".into(), email.text.clone()),
            ("html".into(), email.html.clone()),
            ("h:Message-Id".into(), email.message_id.clone()),
            ("v:leadgate_outbox_id".into(), email.outbox_id.clone()),
        ];
        for (name, value) in &email.headers {
            form.push((format!("h:{name}"), value.clone()));
        }
        let response = self
            .client
            .post(&self.url)
            .basic_auth("api", Some(&self.key))
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error("Mailgun", e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let id = serde_json::from_str::<Queued>(&text)
                .map(|q| q.id)
                .unwrap_or_else(|_| email.message_id.clone());
            return Ok(Accepted { provider_id: id });
        }
        Err(classify_status("Mailgun", status, &text))
    }
}
