//! The WhatsApp sender: claims due messages from the outbound queue, sends each through
//! the Graph API client, and settles the queue row and its activity. A message Meta could
//! not take now (429, 5xx, no answer, after the client's own quick retries) waits and is
//! tried again later, up to `MAX_QUEUE_ATTEMPTS`; a refused one (4xx) fails at once with
//! Meta's error on the activity. Several senders (worker processes on PostgreSQL) may run:
//! claiming skips rows another one holds.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::WHATSAPP;
use super::whatsapp::{Content, WhatsAppClient};
use crate::store::outbound::{OutboundMessage, Settlement};
use crate::store::{RequestMeta, Store, StoreError, WriteContext};

const POLL: Duration = Duration::from_millis(250);
const BATCH: usize = 16;
/// Queue-level attempts (each is itself a few quick client attempts).
const MAX_QUEUE_ATTEMPTS: i64 = 5;
/// The first queue-level retry waits this long, doubling each time.
const REQUEUE_AFTER: Duration = Duration::from_secs(30);

pub struct WhatsAppSender {
    pub store: Store,
    pub client: WhatsAppClient,
    pub shutdown: CancellationToken,
}

fn context() -> WriteContext {
    WriteContext::new("connector:whatsapp", "whatsapp", RequestMeta::default())
}

impl WhatsAppSender {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Fails messages another (stopped) process left `sending`; a live sender settles
    /// each well within this.
    async fn abandon_stale(&self) {
        let cutoff = chrono::Utc::now() - chrono::Duration::minutes(5);
        match self.store.abandon_stale_outbound(&context(), cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                messages = n,
                "outbound messages interrupted while sending were failed"
            ),
            Err(error) => tracing::warn!(%error, "could not settle interrupted outbound messages"),
        }
    }

    async fn run(self) {
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if last_sweep.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                self.abandon_stale().await;
                last_sweep = Some(std::time::Instant::now());
            }
            match self.send_due().await {
                Ok(n) if n > 0 && !self.shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "outbound sender pass failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        tracing::info!("outbound sender stopped");
    }

    /// Sends what is due now; answers how many messages it took.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let due = self.store.claim_outbound(WHATSAPP, BATCH).await?;
        for message in &due {
            let settlement = self.send_one(message).await;
            self.store
                .settle_outbound(&context(), message, settlement)
                .await?;
        }
        Ok(due.len())
    }

    async fn send_one(&self, message: &OutboundMessage) -> Settlement {
        let content: Content = match serde_json::from_value(message.content.clone()) {
            Ok(content) => content,
            Err(error) => {
                return Settlement::Failed {
                    error: format!("unreadable message content: {error}"),
                    detail: serde_json::Value::Null,
                };
            }
        };
        match self.client.send(&message.recipient, &content).await {
            Ok(sent) => Settlement::Sent {
                provider_id: sent.message_id.clone(),
                detail: json!(sent),
            },
            Err(error) if error.is_transient() && message.attempts + 1 < MAX_QUEUE_ATTEMPTS => {
                let wait = REQUEUE_AFTER * 2_u32.pow(message.attempts.clamp(0, 8) as u32);
                tracing::info!(message = %message.id, %error, ?wait, "WhatsApp send deferred");
                Settlement::Retry {
                    at: chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    error: error.to_string(),
                }
            }
            Err(error) => {
                tracing::warn!(message = %message.id, %error, "WhatsApp send failed");
                Settlement::Failed {
                    detail: json!(error.graph_error()),
                    error: error.to_string(),
                }
            }
        }
    }
}
