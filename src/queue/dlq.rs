//! The dead-letter stream (`<stream>_dlq`): messages that failed `max_deliver` times,
//! each with the error, the subject it came from and its delivery count in headers.
//! `leadgate dlq list` shows them; `leadgate dlq replay` publishes them to their original
//! subject again (as new messages) and removes them from the dead-letter stream.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Stream};
use serde::Serialize;

use super::nats::{NatsError, dlq_stream, ensure_streams};
use crate::config::NatsSection;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The message's sequence in the dead-letter stream: the handle for `replay`.
    pub seq: u64,
    /// The inbound id the gateway gave the record, when the payload names one.
    pub id: Option<String>,
    pub subject: String,
    pub attempts: String,
    pub error: String,
    pub dead_at: String,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

async fn open(js: &jetstream::Context, section: &NatsSection) -> Result<Stream, NatsError> {
    ensure_streams(js, section).await?;
    js.get_stream(dlq_stream(section))
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))
}

async fn read(
    stream: &mut Stream,
    limit: usize,
) -> Result<Vec<(DeadLetter, async_nats::jetstream::message::StreamMessage)>, NatsError> {
    let state = stream
        .info()
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?
        .state
        .clone();
    let mut letters = Vec::new();
    if state.messages == 0 {
        return Ok(letters);
    }
    for seq in state.first_sequence..=state.last_sequence {
        if letters.len() >= limit {
            break;
        }
        // Replayed letters are deleted: their sequences are holes.
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
        letters.push((
            DeadLetter {
                seq,
                id,
                subject: header(&message.headers, "Leadgate-Subject"),
                attempts: header(&message.headers, "Leadgate-Attempts"),
                error: header(&message.headers, "Leadgate-Error"),
                dead_at: message.time.to_string(),
            },
            message,
        ));
    }
    Ok(letters)
}

/// Dead letters, oldest first.
pub async fn list(
    js: &jetstream::Context,
    section: &NatsSection,
    limit: usize,
) -> Result<Vec<DeadLetter>, NatsError> {
    let mut stream = open(js, section).await?;
    Ok(read(&mut stream, limit)
        .await?
        .into_iter()
        .map(|(letter, _)| letter)
        .collect())
}

/// Publishes dead letters to their original subjects again (all of them, or those whose
/// sequence is in `only`) and removes each once JetStream has acknowledged its replay.
/// Answers the letters replayed.
pub async fn replay(
    js: &jetstream::Context,
    section: &NatsSection,
    only: &[u64],
) -> Result<Vec<DeadLetter>, NatsError> {
    let mut stream = open(js, section).await?;
    let mut replayed = Vec::new();
    for (letter, message) in read(&mut stream, usize::MAX).await? {
        if !only.is_empty() && !only.contains(&letter.seq) {
            continue;
        }
        if letter.subject.is_empty() {
            tracing::warn!(
                seq = letter.seq,
                "dead letter without its subject; left in place"
            );
            continue;
        }
        let mut headers = HeaderMap::new();
        // A new message id: the original one may still be in the duplicate window.
        headers.insert(
            "Nats-Msg-Id",
            format!("replay-{}-{}", section.stream, letter.seq).as_str(),
        );
        js.publish_with_headers(letter.subject.clone(), headers, message.payload.clone())
            .await
            .map_err(|e| NatsError::JetStream(e.to_string()))?
            .await
            .map_err(|e| NatsError::JetStream(e.to_string()))?;
        stream
            .delete_message(letter.seq)
            .await
            .map_err(|e| NatsError::JetStream(e.to_string()))?;
        replayed.push(letter);
    }
    Ok(replayed)
}
