//! The NATS JetStream queue. A gateway publishes every accepted inbound record to
//! `<stream>.in.<partition>` and answers 2xx only after JetStream acknowledges it;
//! worker processes consume each partition (`pipeline::nats_worker`).
//!
//! Ids are chosen here, before the publish, and are deterministic where the record has
//! a natural key (its `(source, external_id)`, or the Idempotency-Key and its position):
//! a replay gets the same id, JetStream drops it within its duplicate window
//! (`Nats-Msg-Id`), and after the window the worker's inbox insert skips it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, HeaderMap};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use connectors::Inbound;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::partition::identity_of_row;
use super::{AcceptError, InboundQueue};
use crate::config::NatsSection;
use crate::pipeline::Pipeline;
use crate::store::inbox::{Accepted, Delivered, IdempotencyKey, Receipt, Submission};
use crate::store::write::new_id;
use crate::store::{RequestMeta, Store};

#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    #[error("cannot reach NATS: {0}")]
    Connect(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("undecodable message: {0}")]
    Decode(String),
}

fn js_error(error: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream(error.to_string())
}

/// Connects in the background: a gateway starts (and answers 503) while NATS is down,
/// and the client reconnects by itself when it is back.
pub async fn connect(section: &NatsSection) -> Result<Client, NatsError> {
    ConnectOptions::new()
        .name("leadgate")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(section.url.as_str())
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))
}

/// Connects now or fails (for commands, which should say NATS is down rather than wait).
pub async fn connect_now(section: &NatsSection) -> Result<Client, NatsError> {
    ConnectOptions::new()
        .name("leadgate-cli")
        .connection_timeout(Duration::from_secs(5))
        .connect(section.url.as_str())
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))
}

pub fn context(client: Client, section: &NatsSection) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(section.publish_timeout_ms))
        .build(client)
}

pub fn in_subject(section: &NatsSection, partition: u32) -> String {
    format!("{}.in.{partition}", section.stream)
}

pub fn dlq_stream(section: &NatsSection) -> String {
    format!("{}_dlq", section.stream)
}

pub fn dlq_subject(section: &NatsSection, partition: u32) -> String {
    format!("{}.dlq.{partition}", section.stream)
}

/// Creates the inbound and dead-letter streams when missing (idempotent).
pub async fn ensure_streams(
    js: &jetstream::Context,
    section: &NatsSection,
) -> Result<(), NatsError> {
    js.get_or_create_stream(stream::Config {
        name: section.stream.clone(),
        subjects: vec![format!("{}.in.*", section.stream)],
        max_bytes: section.max_bytes,
        max_messages: section.max_msgs,
        max_message_size: section.max_msg_bytes,
        // Full means refuse: the gateway answers 503 instead of losing old records.
        discard: stream::DiscardPolicy::New,
        // Work queue: a message is removed once acknowledged, so the limits measure
        // the backlog, not history.
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(section.duplicate_window_secs),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(js_error)?;
    js.get_or_create_stream(stream::Config {
        name: dlq_stream(section),
        subjects: vec![format!("{}.dlq.*", section.stream)],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(js_error)?;
    Ok(())
}

/// What travels in a message: the inbound record, its id and where it came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub source: String,
    pub external_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The raw body, base64.
    pub raw: String,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Envelope {
    pub fn new(id: &str, item: &Inbound, meta: &RequestMeta) -> Self {
        Self {
            id: id.to_owned(),
            source: item.source.clone(),
            external_id: item.external_id.clone(),
            received_at: item.received_at,
            fields: item.fields.clone(),
            raw: BASE64.encode(&item.raw),
            request_id: meta.request_id.clone(),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        }
    }

    pub fn decode(payload: &[u8], attempts: i64) -> Result<Delivered, NatsError> {
        let envelope: Envelope =
            serde_json::from_slice(payload).map_err(|e| NatsError::Decode(e.to_string()))?;
        let raw = BASE64
            .decode(envelope.raw.as_bytes())
            .map_err(|e| NatsError::Decode(format!("raw: {e}")))?;
        Ok(Delivered {
            id: envelope.id,
            inbound: Inbound {
                source: envelope.source,
                external_id: envelope.external_id,
                received_at: envelope.received_at,
                fields: envelope.fields,
                raw,
            },
            meta: RequestMeta {
                request_id: envelope.request_id,
                ip: envelope.ip,
                user_agent: envelope.user_agent,
            },
            attempts,
        })
    }
}

/// The id of an item: derived from its natural key when it has one, so every replay of
/// it carries the same id (and the same `Nats-Msg-Id`).
pub fn item_id(item: &Inbound, idempotency: Option<&IdempotencyKey>, index: usize) -> String {
    let natural = match (&item.external_id, idempotency) {
        (Some(external_id), _) => Some(format!("x\0{}\0{external_id}", item.source)),
        (None, Some(key)) => Some(format!("k\0{}\0{}\0{index}", key.scope, key.key)),
        (None, None) => None,
    };
    match natural {
        Some(natural) => {
            let digest = Sha256::digest(natural.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .to_string()
        }
        None => new_id(),
    }
}

/// The gateway side: publishes and waits for JetStream's acknowledgement.
pub struct NatsQueue {
    client: Client,
    js: jetstream::Context,
    section: NatsSection,
    store: Store,
    pipeline: Arc<Pipeline>,
    streams: OnceCell<()>,
}

impl NatsQueue {
    pub fn new(
        client: Client,
        section: NatsSection,
        store: Store,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        let js = context(client.clone(), &section);
        Self {
            client,
            js,
            section,
            store,
            pipeline,
            streams: OnceCell::new(),
        }
    }

    fn unavailable(why: impl std::fmt::Display) -> AcceptError {
        AcceptError::QueueUnavailable(format!("the inbound queue cannot take records now ({why})"))
    }

    async fn publish(&self, submission: Submission) -> Result<Accepted, AcceptError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Self::unavailable("NATS is not connected"));
        }
        // Created lazily, so a gateway started while NATS was down recovers by itself.
        self.streams
            .get_or_try_init(|| ensure_streams(&self.js, &self.section))
            .await
            .map_err(Self::unavailable)?;
        if let Some(key) = &submission.idempotency
            && let Some(answer) = self
                .store
                .idempotent_answer(key)
                .await
                .map_err(|e| AcceptError::from(&e))?
        {
            return Ok(answer);
        }
        let timeout = Duration::from_millis(self.section.publish_timeout_ms);
        let mut acks = Vec::with_capacity(submission.items.len());
        for (index, item) in submission.items.iter().enumerate() {
            let id = item_id(item, submission.idempotency.as_ref(), index);
            let row = Delivered {
                id: id.clone(),
                inbound: item.clone(),
                meta: submission.meta.clone(),
                attempts: 0,
            }
            .to_row();
            let partition =
                identity_of_row(&self.pipeline, &row).partition(self.section.partitions, &id);
            let payload = serde_json::to_vec(&Envelope::new(&id, item, &submission.meta))
                .map_err(|e| AcceptError::Store(format!("cannot encode the record: {e}")))?;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = tokio::time::timeout(
                timeout,
                self.js.publish_with_headers(
                    in_subject(&self.section, partition),
                    headers,
                    payload.into(),
                ),
            )
            .await
            .map_err(|_| Self::unavailable("publish timed out"))?
            .map_err(Self::unavailable)?;
            acks.push((id, item.external_id.clone(), ack));
        }
        let mut receipts = Vec::with_capacity(acks.len());
        for (id, external_id, ack) in acks {
            let ack = tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| Self::unavailable("no acknowledgement in time"))?
                .map_err(Self::unavailable)?;
            receipts.push(Receipt {
                id,
                external_id,
                duplicate: ack.duplicate,
            });
        }
        match &submission.idempotency {
            Some(key) => self
                .store
                .remember_idempotent(key, receipts)
                .await
                .map_err(|e| AcceptError::from(&e)),
            None => Ok(Accepted::New(receipts)),
        }
    }
}

impl InboundQueue for NatsQueue {
    fn accept(&self, submission: Submission) -> BoxFuture<'_, Result<Accepted, AcceptError>> {
        Box::pin(self.publish(submission))
    }
}
