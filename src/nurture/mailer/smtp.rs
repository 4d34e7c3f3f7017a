//! SMTP through lettre's async transport (tokio, rustls): plain, STARTTLS (required) or
//! TLS from the first byte, AUTH when a user is configured, a small connection pool.
//! A 4xx reply or a connection lost before the server's final `250` is temporary (the
//! server has not taken the message, so sending it again delivers it once); 5xx is
//! permanent, except a refused AUTH (see `classify`).
//!
//! lettre's async transport bounds only the TCP connect, not the server's answers, so a
//! server that stops answering would hold a send (and its outbox lease) until its own
//! idle timeout. Every send is therefore bounded as a whole by `timeout_secs`.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Accepted, MailError, Mailer, MailerConfigError, OutgoingEmail, secret_from_env};
use crate::nurture::config::{SmtpSection, SmtpTls};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// What a transport is built from (again, when a send timed out).
struct Settings {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    timeout: Duration,
    pool_size: u32,
}

impl Settings {
    fn build(&self) -> Transport {
        let mut builder = Transport::builder_dangerous(self.host.clone())
            .port(self.port)
            .tls(self.tls.clone())
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(self.pool_size));
        if let Some(credentials) = &self.credentials {
            builder = builder.credentials(credentials.clone());
        }
        builder.build()
    }
}

pub struct SmtpMailer {
    settings: Settings,
    /// Replaced by a fresh one (new pool) when a send times out: the abandoned
    /// connection may be mid-command, and a pooled connection that later reads the
    /// late answer of an earlier command would pair answers with the wrong commands.
    transport: RwLock<Transport>,
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
        let credentials = if section.user.is_empty() {
            None
        } else {
            let password = secret_from_env("smtp", &section.password_env)?;
            Some(Credentials::new(section.user.clone(), password))
        };
        let settings = Settings {
            host: section.host.clone(),
            port: section.port,
            tls,
            credentials,
            timeout: Duration::from_secs(section.timeout_secs.max(1)),
            pool_size: section.pool_size.max(1),
        };
        let transport = RwLock::new(settings.build());
        Ok(Self {
            settings,
            transport,
        })
    }

    fn current(&self) -> Transport {
        match self.transport.read() {
            Ok(transport) => transport.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Drops the pool a timed-out send used: its connections close, later sends open new ones.
    fn renew(&self) {
        let fresh = self.settings.build();
        let old = match self.transport.write() {
            Ok(mut transport) => std::mem::replace(&mut *transport, fresh),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
        };
        tokio::spawn(async move { old.shutdown().await });
    }
}

/// Whether the relay refused our credentials (530, 534, 535, 538).
fn auth_refused(error: &lettre::transport::smtp::Error) -> bool {
    matches!(error.status().map(u16::from), Some(530 | 534 | 535 | 538))
}

/// A lettre error as a send outcome. A refused AUTH is about the configuration, not the
/// email: it is kept temporary so queued emails wait, retried by the usual policy, for
/// the password to be fixed, rather than every one of them failing for good.
fn classify(error: &lettre::transport::smtp::Error) -> MailError {
    if auth_refused(error) {
        return MailError::Temporary(format!(
            "SMTP AUTH refused (check nurture.smtp.user and the password): {error}"
        ));
    }
    if error.is_permanent() {
        MailError::Permanent(format!("SMTP: {error}"))
    } else {
        MailError::Temporary(format!("SMTP: {error}"))
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<Accepted, MailError> {
        let message = super::to_message(email)?;
        let transport = self.current();
        match tokio::time::timeout(self.settings.timeout, transport.send(message)).await {
            // Bounces (DSNs) and replies name our Message-ID, so it is the id to keep;
            // the server's own queue id is in its answer, logged.
            Ok(Ok(response)) => {
                tracing::debug!(
                    message_id = %email.message_id,
                    answer = %response.message().collect::<Vec<_>>().join(" "),
                    "SMTP server took the message"
                );
                Ok(Accepted {
                    provider_id: email.message_id.clone(),
                })
            }
            Ok(Err(error)) => {
                if auth_refused(&error) {
                    tracing::error!(%error, host = %self.settings.host,
                        "the SMTP relay refuses our credentials");
                }
                Err(classify(&error))
            }
            Err(_) => {
                self.renew();
                Err(MailError::Temporary(format!(
                    "SMTP: no answer within {} s",
                    self.settings.timeout.as_secs()
                )))
            }
        }
    }
}
