//! The email sender: claims due outbox rows, checks the suppression list and the
//! mailbox's daily limit, hands each email to the mailer and settles it. Temporary
//! failures wait `retry_base_ms`, doubling per attempt, up to `max_attempts`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::NurtureSection;
use super::mailer::{Mailer, OutgoingEmail};
use super::outbox::{self, Claimed, Outcome};
use super::tracking::{Token, TrackingKey};
use crate::store::{RequestMeta, Store, StoreError, WriteContext};

const BATCH: usize = 16;

pub struct EmailSender {
    pub store: Store,
    pub mailer: Arc<dyn Mailer>,
    pub section: Arc<NurtureSection>,
    pub key: TrackingKey,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub shutdown: CancellationToken,
}

fn context() -> WriteContext {
    WriteContext::new("connector:email", "nurture", RequestMeta::default())
}

/// `List-Unsubscribe` (mailto and https) and RFC 8058's one-click `List-Unsubscribe-Post`.
pub fn unsubscribe_headers(
    section: &NurtureSection,
    key: &TrackingKey,
    outbox_id: &str,
) -> Vec<(String, String)> {
    let url = format!(
        "{}/u/{}",
        section.base(),
        key.sign(&Token::Unsubscribe {
            outbox_id: outbox_id.to_owned()
        })
    );
    let list = if section.unsubscribe_mailto.is_empty() {
        format!("<{url}>")
    } else {
        format!(
            "<mailto:{}?subject=unsubscribe-{outbox_id}>, <{url}>",
            section.unsubscribe_mailto
        )
    };
    vec![
        ("List-Unsubscribe".into(), list),
        (
            "List-Unsubscribe-Post".into(),
            "List-Unsubscribe=One-Click".into(),
        ),
    ]
}

impl EmailSender {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let poll = Duration::from_millis(self.section.poll_ms.max(10));
        loop {
            match self.send_due().await {
                Ok(n) if n > 0 && !self.shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "email sender pass failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("email sender stopped");
    }

    /// Sends what is due now; answers how many emails it took.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let lease = chrono::Duration::seconds(self.section.lease_secs.max(1) as i64);
        let due = outbox::claim(&self.store, BATCH, lease).await?;
        for email in &due {
            let outcome = self.send_one(email).await?;
            let label = match &outcome {
                Outcome::Sent { .. } => "sent",
                Outcome::Retry { .. } => "retry",
                Outcome::Failed { .. } => "failed",
                Outcome::Suppressed { .. } => "suppressed",
                Outcome::Deferred { .. } => "deferred",
            };
            self.metrics
                .emails
                .with_label_values(&[self.mailer.name(), label])
                .inc();
            outbox::settle(&self.store, &context(), email, outcome).await?;
        }
        Ok(due.len())
    }

    async fn send_one(&self, email: &Claimed) -> Result<Outcome, StoreError> {
        let suppressed = super::suppression::reason(&self.store, &email.recipient)
            .await
            .map_err(|e| match e {
                super::NurtureError::Store(e) => e,
                other => StoreError::Unavailable(other.to_string()),
            })?;
        if let Some(reason) = suppressed {
            return Ok(Outcome::Suppressed { reason });
        }
        let limit = self.section.daily_limit_per_mailbox;
        let mailbox = super::config::address_of(&email.mailbox);
        if limit > 0 && outbox::sent_today(&self.store, &mailbox).await? >= limit {
            let tomorrow = (Utc::now() + chrono::Duration::days(1))
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or_else(Utc::now);
            tracing::info!(%mailbox, limit, "daily limit reached; email waits for tomorrow");
            return Ok(Outcome::Deferred { at: tomorrow });
        }
        let outgoing = OutgoingEmail {
            message_id: email.message_id.clone(),
            from: email.mailbox.clone(),
            to: email.recipient.clone(),
            subject: email.subject.clone(),
            html: email.html.clone(),
            text: email.text.clone(),
            headers: unsubscribe_headers(&self.section, &self.key, &email.id),
            outbox_id: email.id.clone(),
        };
        if email.reclaimed > 0 {
            // No SMTP command asks a server whether it took a message; the same
            // Message-ID lets receivers and our tracking see a second copy as the same one.
            tracing::warn!(email = %email.id, message_id = %email.message_id,
                "sending again an email whose earlier attempt stopped unsettled; it may arrive twice");
        }
        Ok(match self.mailer.send(&outgoing).await {
            Ok(accepted) => Outcome::Sent {
                provider_id: if accepted.provider_id.is_empty() {
                    email.message_id.clone()
                } else {
                    accepted.provider_id
                },
                mailer: self.mailer.name().to_owned(),
            },
            Err(error)
                if error.is_temporary() && email.attempts + 1 < self.section.max_attempts =>
            {
                let wait = Duration::from_millis(self.section.retry_base_ms)
                    * 2_u32.pow(email.attempts.clamp(0, 16) as u32);
                tracing::info!(email = %email.id, %error, ?wait, "email send deferred");
                Outcome::Retry {
                    at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    error: error.to_string(),
                }
            }
            Err(error) => {
                tracing::warn!(email = %email.id, %error, "email send failed");
                Outcome::Failed {
                    error: error.to_string(),
                }
            }
        })
    }
}
