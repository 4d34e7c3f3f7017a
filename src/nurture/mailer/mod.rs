//! The `Mailer` trait and its implementations: SMTP (lettre) and the HTTP APIs of
//! SendGrid, Mailgun and Amazon SES. A mailer hands over one email and says whether a
//! failure is temporary (try again later) or permanent (give up).

pub mod mailgun;
pub mod sendgrid;
pub mod ses;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::config::{MailerKind, NurtureSection};

/// One email ready to hand over.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// `<id@domain>`, the same on every attempt.
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Extra headers (`List-Unsubscribe`, `List-Unsubscribe-Post`, …).
    pub headers: Vec<(String, String)>,
    /// The outbox row, passed to providers that echo custom data in their webhooks.
    pub outbox_id: String,
}

/// What the provider answered for an accepted email.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The provider's id of the message (what its webhooks name).
    pub provider_id: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MailError {
    /// Not now: a 4xx SMTP reply, a dropped connection, HTTP 429 or 5xx.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Never: a 5xx SMTP reply, HTTP 4xx other than 429, an unusable address.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl MailError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, MailError::Temporary(_))
    }
}

#[async_trait]
pub trait Mailer: Send + Sync {
    fn name(&self) -> &'static str;
    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError>;
}

#[derive(Debug, thiserror::Error)]
#[error("nurture.{section}: {reason}")]
pub struct MailerConfigError {
    pub section: &'static str,
    pub reason: String,
}

/// The mailer `[nurture]` configures, or none when `mailer = "none"`.
pub fn from_config(section: &NurtureSection) -> Result<Option<Arc<dyn Mailer>>, MailerConfigError> {
    Ok(match section.mailer {
        MailerKind::None => None,
        MailerKind::Smtp => Some(Arc::new(smtp::SmtpMailer::new(&section.smtp)?)),
        MailerKind::Sendgrid => Some(Arc::new(sendgrid::SendGrid::new(&section.sendgrid)?)),
        MailerKind::Mailgun => Some(Arc::new(mailgun::Mailgun::new(&section.mailgun)?)),
        MailerKind::Ses => Some(Arc::new(ses::Ses::new(&section.ses)?)),
    })
}

/// A secret from the environment variable `name`.
pub(crate) fn secret_from_env(
    section: &'static str,
    name: &str,
) -> Result<String, MailerConfigError> {
    if name.is_empty() {
        return Err(MailerConfigError {
            section,
            reason: "the *_env key naming the secret's environment variable is empty".into(),
        });
    }
    std::env::var(name).map_err(|_| MailerConfigError {
        section,
        reason: format!("environment variable {name} is not set"),
    })
}

pub(crate) fn http_client(
    section: &'static str,
    timeout_secs: u64,
) -> Result<reqwest::Client, MailerConfigError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs.max(1)))
        .build()
        .map_err(|e| MailerConfigError {
            section,
            reason: e.to_string(),
        })
}

/// An HTTP status as a send outcome: 429 and 5xx are temporary, other 4xx permanent.
pub(crate) fn classify_status(
    provider: &str,
    status: reqwest::StatusCode,
    body: &str,
) -> MailError {
    let detail: String = body.chars().take(500).collect();
    let message = format!("{provider} answered {status}: {detail}");
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        MailError::Temporary(message)
    } else {
        MailError::Permanent(message)
    }
}

/// A transport error of an HTTP provider (no answer, timeout): temporary.
pub(crate) fn transport_error(provider: &str, error: reqwest::Error) -> MailError {
    MailError::Temporary(format!("{provider} not reached: {error}"))
}

/// The email as an RFC 5322 message (multipart/alternative: text, then HTML).
pub fn to_message(email: &OutgoingEmail) -> Result<lettre::Message, MailError> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| MailError::Permanent(format!("sender `{}`: {e}", email.from)))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| MailError::Permanent(format!("recipient `{}`: {e}", email.to)))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()));
    for (name, value) in &email.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|e| MailError::Permanent(format!("header `{name}`: {e}")))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))
}
