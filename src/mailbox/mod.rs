//! Inbound email: the record one raw message becomes (shared by `POST /v1/inbound/email` and
//! the IMAP mailboxes), and one polling task per configured `[[mailboxes]]` entry.
//!
//! Every message is classified (`lead`, `auto_reply`, `bounce`, `own_domain`, `no_sender`)
//! into the inbound field `classification`; all are stored, and `mappings/email.toml` skips
//! everything that is not a lead. A bounce keeps its failed recipients in
//! `bounce_recipients`.

mod poller;
pub mod stream;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use connectors::Inbound;
use connectors::email::{self, Classification, EmailError};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MailboxSection};
use crate::queue::Accepter;
use crate::store::inbox::{Accepted, Receipt, Submission};
use crate::store::{RequestMeta, Store, StoreError};
use crate::telemetry::Metrics;

/// Connects to a mailbox as the poller would (TLS verified), logs in and out: whether
/// the configuration works, and whether the server offers IDLE.
pub async fn check(config: &crate::config::MailboxSection) -> anyhow::Result<bool> {
    let (mut session, idle) = poller::connect(config).await?;
    session.logout().await?;
    Ok(idle)
}

/// The source of messages posted to `POST /v1/inbound/email`.
pub const HTTP_SOURCE: &str = "email:inbound";

/// Decodes and classifies one raw message into the record the inbox stores.
pub fn email_record(
    source: &str,
    raw: &[u8],
    own_domains: &[String],
    received_at: DateTime<Utc>,
) -> Result<(Inbound, Classification), EmailError> {
    let mut record = email::decode(source, raw, received_at)?;
    let classification = email::classify(&record, own_domains);
    record.fields.insert(
        "classification".into(),
        classification_name(&classification).into(),
    );
    if let Classification::Bounce { recipients } = &classification {
        record
            .fields
            .insert("bounce_recipients".into(), json!(recipients));
    }
    Ok((record, classification))
}

/// The name of a classification as stored in the `classification` field.
pub fn classification_name(classification: &Classification) -> &'static str {
    match classification {
        Classification::Lead => "lead",
        Classification::AutoReply => "auto_reply",
        Classification::Bounce { .. } => "bounce",
        Classification::OwnDomain => "own_domain",
        Classification::NoSender => "no_sender",
    }
}

/// Makes one record durable through the inbox (one group commit) and counts it.
pub async fn accept_one(
    accepter: &Accepter,
    metrics: &Metrics,
    record: Inbound,
    meta: RequestMeta,
) -> anyhow::Result<Receipt> {
    let source = record.source.clone();
    let accepted = accepter
        .accept(Submission {
            items: vec![record],
            meta,
            idempotency: None,
        })
        .await
        .map_err(|error| anyhow::anyhow!("the inbox refused the message: {error}"))?;
    let receipt = match accepted {
        Accepted::New(receipts) | Accepted::Replayed(receipts) => receipts.into_iter().next(),
        Accepted::KeyReused => None,
    };
    let Some(receipt) = receipt else {
        anyhow::bail!("the inbox answered no receipt");
    };
    let counter = if receipt.duplicate {
        &metrics.inbound_replayed
    } else {
        &metrics.inbound_accepted
    };
    counter.with_label_values(&[&source]).inc();
    Ok(receipt)
}

/// What happens to a message in the mailbox once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAction {
    /// Set `\Seen` (the fetch itself does not: it uses `BODY.PEEK[]`).
    Flag,
    /// Move to this folder (`MOVE`, else `COPY` + delete).
    Move(String),
    /// Mark `\Deleted` and expunge.
    Delete,
}

impl AfterAction {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "flag" => Some(Self::Flag),
            "delete" => Some(Self::Delete),
            _ => text
                .strip_prefix("move:")
                .filter(|folder| !folder.trim().is_empty())
                .map(|folder| Self::Move(folder.to_owned())),
        }
    }
}

/// The remembered position in one mailbox's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxPosition {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// The position stored for `mailbox`, if any.
pub async fn load_position(
    store: &Store,
    mailbox: &str,
) -> Result<Option<MailboxPosition>, StoreError> {
    use sqlx::Row;
    let row = sqlx::query("SELECT uid_validity, last_uid FROM mailbox_state WHERE mailbox = $1")
        .bind(mailbox)
        .fetch_optional(store.pool())
        .await?;
    Ok(row.map(|row| MailboxPosition {
        uid_validity: u32::try_from(row.get::<i64, _>(0)).unwrap_or(0),
        last_uid: u32::try_from(row.get::<i64, _>(1)).unwrap_or(0),
    }))
}

/// Remembers that every message up to `position.last_uid` is durable.
pub async fn save_position(
    store: &Store,
    mailbox: &str,
    folder: &str,
    position: MailboxPosition,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO mailbox_state (mailbox, folder, uid_validity, last_uid, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mailbox) DO UPDATE SET folder = $2, \
         uid_validity = $3, last_uid = $4, updated_at = $5",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(i64::from(position.uid_validity))
    .bind(i64::from(position.last_uid))
    .bind(Utc::now().to_rfc3339())
    .execute(store.pool())
    .await?;
    Ok(())
}

/// What one mailbox task needs.
#[derive(Clone)]
pub struct MailboxContext {
    pub store: Store,
    pub accepter: Accepter,
    pub metrics: Arc<Metrics>,
    pub own_domains: Vec<String>,
    pub max_message_bytes: usize,
    pub shutdown: CancellationToken,
}

/// Starts one task per configured mailbox; they end when `shutdown` is cancelled.
pub fn spawn_all(config: &Config, context: &MailboxContext) -> Vec<JoinHandle<()>> {
    config
        .mailboxes
        .iter()
        .map(|mailbox: &MailboxSection| {
            let poller = poller::Poller::new(mailbox.clone(), context.clone());
            tokio::spawn(poller.run())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_actions() {
        assert_eq!(AfterAction::parse("flag"), Some(AfterAction::Flag));
        assert_eq!(AfterAction::parse("delete"), Some(AfterAction::Delete));
        assert_eq!(
            AfterAction::parse("move:Leads/Done"),
            Some(AfterAction::Move("Leads/Done".to_owned()))
        );
        assert_eq!(AfterAction::parse("move: "), None);
        assert_eq!(AfterAction::parse("Flag"), None);
    }

    #[test]
    fn every_message_is_classified_into_a_field() {
        let raw =
            b"From: MAILER-DAEMON@mx.other.example\r\nSubject: failure notice\r\n\r\nSorry.\r\n";
        let (record, classification) =
            email_record(HTTP_SOURCE, raw, &[], Utc::now()).expect("decodes");
        assert_eq!(classification_name(&classification), "bounce");
        assert_eq!(record.fields["classification"], "bounce");
        assert_eq!(record.fields["bounce_recipients"], json!([]));
        assert!(email_record(HTTP_SOURCE, b"", &[], Utc::now()).is_err());
    }
}
