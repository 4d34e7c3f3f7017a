//! SMTP through lettre's async transport (tokio, rustls): plain, STARTTLS (required) or
//! TLS from the first byte, AUTH when a user is configured, a small connection pool.
//! A 4xx reply or a connection lost before the server's final `250` is temporary (the
//! server has not taken the message, so sending it again delivers it once); 5xx is
//! permanent.

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Accepted, MailError, Mailer, MailerConfigError, OutgoingEmail, secret_from_env};
use crate::nurture::config::{SmtpSection, SmtpTls};

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(section: &SmtpSection) -> Result<Self, MailerConfigError> {
        let error = |reason: String| MailerConfigError {
            section: "smtp",
            reason,
        };
        if section.host.is_empty() {
            return Err(error("host is empty".into()));
        }
        let tls = match section.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let mut builder = TlsParameters::builder(section.host.clone());
                if !section.ca_file.is_empty() {
                    let pem = std::fs::read(&section.ca_file)
                        .map_err(|e| error(format!("ca_file {}: {e}", section.ca_file)))?;
                    let root = Certificate::from_pem(&pem)
                        .map_err(|e| error(format!("ca_file {}: {e}", section.ca_file)))?;
                    builder = builder.add_root_certificate(root);
                }
                let parameters = builder
                    .build_rustls()
                    .map_err(|e| error(format!("TLS: {e}")))?;
                if section.tls == SmtpTls::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(section.host.clone())
                .port(section.port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(section.timeout_secs.max(1))))
                .pool_config(PoolConfig::new().max_size(section.pool_size.max(1)));
        if !section.user.is_empty() {
            let password = secret_from_env("smtp", &section.password_env)?;
            builder = builder.credentials(Credentials::new(section.user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError> {
        let message = super::to_message(email)?;
        match self.transport.send(message).await {
            // Bounces (DSNs) and replies name our Message-ID, so it is the id to keep;
            // the server's own queue id is in its answer, logged.
            Ok(response) => {
                tracing::debug!(
                    message_id = %email.message_id,
                    answer = %response.message().collect::<Vec<_>>().join(" "),
                    "SMTP server took the message"
                );
                Ok(Accepted {
                    provider_id: email.message_id.clone(),
                })
            }
            Err(error) if error.is_permanent() => {
                Err(MailError::Permanent(format!("SMTP: {error}")))
            }
            Err(error) => Err(MailError::Temporary(format!("SMTP: {error}"))),
        }
    }
}
