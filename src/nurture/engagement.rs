//! What recipients do with sent emails: opens, clicks and unsubscribes. Each fetch is kept
//! in `email_events`; a machine's fetch (scanner user agent, or within seconds of the
//! send) is kept with `bot = 1` and counts for nothing. The first human open and the first
//! click of a message become activities on the lead's timeline and add the score's
//! behaviour points (`email_open`, `email_click` rules).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::NurtureError;
use super::config::NurtureSection;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::pipeline::score::Scoring;
use crate::store::write::{apply, new_id};
use crate::store::{Change, RequestMeta, Store, WriteContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open,
    Click,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Click => "click",
        }
    }

    fn channel(self) -> &'static str {
        match self {
            Event::Open => "email_open",
            Event::Click => "email_click",
        }
    }
}

/// Whether the event counted (`false`: a bot's, or the message is unknown).
pub async fn record(
    store: &Store,
    section: &NurtureSection,
    scoring: &Scoring,
    outbox_id: &str,
    event: Event,
    url: Option<&str>,
    meta: &RequestMeta,
) -> Result<bool, NurtureError> {
    let mut tx = store.begin_write().await?;
    let counted = record_in(&mut tx, section, scoring, outbox_id, event, url, meta).await?;
    tx.commit().await?;
    Ok(counted)
}

/// As [`record`], in the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub async fn record_in(
    conn: &mut AnyConnection,
    section: &NurtureSection,
    scoring: &Scoring,
    outbox_id: &str,
    event: Event,
    url: Option<&str>,
    meta: &RequestMeta,
) -> Result<bool, NurtureError> {
    let row = sqlx::query("SELECT lead_id, sent_at, created_at FROM email_outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let lead_id: Option<String> = row.try_get("lead_id")?;
    let sent_at: Option<String> = row.try_get("sent_at")?;
    let since_sent = sent_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds());
    let agent = meta.user_agent.clone().unwrap_or_default();
    // Clicks are people following a link: only scanner agents make them bots.
    let bot = match event {
        Event::Open => super::tracking::looks_like_bot(&agent, since_sent, section.bot_open_secs),
        Event::Click => super::tracking::looks_like_bot(&agent, None, 0),
    };
    // Whether a person did this before (one row at most: a message fetched thousands of
    // times must not make each fetch count them all).
    let earlier: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM email_events WHERE outbox_id = $1 AND event = $2 AND bot = $3 LIMIT 1",
    )
    .bind(outbox_id)
    .bind(event.as_str())
    .bind(0_i64)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO email_events (id, outbox_id, event, bot, url, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(outbox_id)
    .bind(event.as_str())
    .bind(i64::from(bot))
    .bind(url)
    .bind(meta.user_agent.as_deref())
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    if bot || earlier.is_some() {
        return Ok(!bot);
    }
    if let Some(lead_id) = lead_id {
        let ctx = WriteContext::new("connector:email-tracking", "nurture", meta.clone());
        let points = scoring.behaviour(event.channel());
        let mut changes = vec![Change::Insert {
            kind: RecordKind::Activity,
            id: None,
            fields: object(json!({
                "activity_type": format!("email_{}", event.as_str()),
                "channel": "email",
                "direction": "inbound",
                "status": "received",
                "subject": match event {
                    Event::Open => "Email opened".to_owned(),
                    Event::Click => format!("Link clicked: {}", url.unwrap_or_default()),
                },
                "occurred_at": now_timestamp(),
                "lead_id": lead_id,
                "data": {"outbox_id": outbox_id, "url": url, "score_rules": points.fired,
                         "points": points.total},
            })),
        }];
        if points.total != 0
            && let Some(lead) =
                crate::store::read::fields_in(&mut *conn, RecordKind::Lead, &lead_id).await?
        {
            let number = |name: &str| lead.get(name).and_then(Value::as_i64).unwrap_or(0);
            changes.push(Change::Update {
                kind: RecordKind::Lead,
                id: lead_id.clone(),
                fields: object(json!({
                    "behaviour_score": number("behaviour_score") + points.total,
                    "score": number("score") + points.total,
                })),
                expected_version: None,
            });
        }
        apply(&mut *conn, &ctx, changes).await?;
    }
    Ok(true)
}

/// One fetch to record.
pub struct Fetch {
    pub outbox_id: String,
    pub event: Event,
    pub url: Option<String>,
    pub meta: RequestMeta,
}

type Reply = tokio::sync::oneshot::Sender<Result<bool, String>>;

/// Records tracking fetches with group commit: what arrives while one transaction
/// commits is written by the next, so a burst of opens costs a few syncs, not one each.
/// Each caller still waits until its fetch is durable.
#[derive(Clone)]
pub struct EventWriter {
    queue: tokio::sync::mpsc::Sender<(Fetch, Reply)>,
}

/// Most fetches one transaction writes.
const GROUP_MAX: usize = 256;

impl EventWriter {
    pub fn spawn(store: Store, section: std::sync::Arc<NurtureSection>, scoring: Scoring) -> Self {
        let (queue, mut incoming) = tokio::sync::mpsc::channel::<(Fetch, Reply)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(GROUP_MAX);
            while incoming.recv_many(&mut batch, GROUP_MAX).await > 0 {
                let results = write_group(&store, &section, &scoring, &batch).await;
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        Self { queue }
    }

    pub async fn record(&self, fetch: Fetch) -> Result<bool, NurtureError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send((fetch, reply))
            .await
            .map_err(|_| NurtureError::Invalid("the event writer stopped".into()))?;
        answer
            .await
            .map_err(|_| NurtureError::Invalid("the event writer stopped".into()))?
            .map_err(NurtureError::Invalid)
    }
}

/// One transaction for the group; a fetch that fails is retried alone so it cannot take
/// the others down with it.
async fn write_group(
    store: &Store,
    section: &NurtureSection,
    scoring: &Scoring,
    batch: &[(Fetch, Reply)],
) -> Vec<Result<bool, String>> {
    let together = async {
        let mut tx = store.begin_write().await?;
        let mut counted = Vec::with_capacity(batch.len());
        for (fetch, _) in batch {
            counted.push(
                record_in(
                    &mut tx,
                    section,
                    scoring,
                    &fetch.outbox_id,
                    fetch.event,
                    fetch.url.as_deref(),
                    &fetch.meta,
                )
                .await?,
            );
        }
        tx.commit().await?;
        Ok::<_, NurtureError>(counted)
    };
    match together.await {
        Ok(counted) => counted.into_iter().map(Ok).collect(),
        Err(_) if batch.len() > 1 => {
            let mut results = Vec::with_capacity(batch.len());
            for (fetch, _) in batch {
                results.push(
                    record(
                        store,
                        section,
                        scoring,
                        &fetch.outbox_id,
                        fetch.event,
                        fetch.url.as_deref(),
                        &fetch.meta,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                );
            }
            results
        }
        Err(error) => vec![Err(error.to_string())],
    }
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

/// Counted (human) events of `event` for one message.
pub async fn counted(store: &Store, outbox_id: &str, event: &str) -> Result<i64, NurtureError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_events WHERE outbox_id = $1 AND event = $2 AND bot = $3",
    )
    .bind(outbox_id)
    .bind(event)
    .bind(0_i64)
    .fetch_one(store.pool())
    .await?)
}

/// An unsubscribe through a message's link: the address is suppressed, its active
/// enrolments end, and the lead's timeline says so. Answers the address.
pub async fn unsubscribe(
    store: &Store,
    outbox_id: &str,
    meta: &RequestMeta,
) -> Result<Option<String>, NurtureError> {
    let row = sqlx::query("SELECT recipient, lead_id FROM email_outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(store.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let recipient: String = row.try_get("recipient")?;
    let lead_id: Option<String> = row.try_get("lead_id")?;
    let mut tx = store.begin_write().await?;
    super::suppression::suppress_in(&mut tx, &recipient, "unsubscribed", "link").await?;
    if let Some(lead_id) = &lead_id {
        super::sequences::exit_all_in(&mut tx, lead_id, "unsubscribed").await?;
        let ctx = WriteContext::new("connector:email-tracking", "nurture", meta.clone());
        let changes = vec![
            Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: object(json!({
                    "activity_type": "email_unsubscribe",
                    "channel": "email",
                    "direction": "inbound",
                    "status": "received",
                    "subject": format!("{recipient} unsubscribed"),
                    "occurred_at": now_timestamp(),
                    "lead_id": lead_id,
                    "data": {"outbox_id": outbox_id},
                })),
            },
            Change::Update {
                kind: RecordKind::Lead,
                id: lead_id.clone(),
                fields: object(json!({"consent_email": false})),
                expected_version: None,
            },
        ];
        let exists = crate::store::read::fields_in(&mut tx, RecordKind::Lead, lead_id)
            .await?
            .is_some();
        let changes = if exists {
            changes
        } else {
            changes[..0].to_vec()
        };
        apply(&mut tx, &ctx, changes).await?;
    }
    tx.commit().await?;
    Ok(Some(recipient))
}
