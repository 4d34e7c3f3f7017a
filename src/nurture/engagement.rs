//! What recipients do with sent emails: opens, clicks and unsubscribes. Each fetch is kept
//! in `email_events`; a machine's fetch (scanner user agent, or within seconds of the
//! send) is kept with `bot = 1` and counts for nothing. The first human open and the first
//! click of a message become activities on the lead's timeline and add the score's
//! behaviour points (`email_open`, `email_click` rules).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::Row;

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
    let row = sqlx::query("SELECT lead_id, sent_at, created_at FROM email_outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(store.pool())
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
    let mut tx = store.begin_write().await?;
    let earlier: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_events WHERE outbox_id = $1 AND event = $2 AND bot = $3",
    )
    .bind(outbox_id)
    .bind(event.as_str())
    .bind(0_i64)
    .fetch_one(&mut *tx)
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
    .execute(&mut *tx)
    .await?;
    if bot || earlier > 0 {
        tx.commit().await?;
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
                crate::store::read::fields_in(&mut tx, RecordKind::Lead, &lead_id).await?
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
        apply(&mut tx, &ctx, changes).await?;
    }
    tx.commit().await?;
    Ok(true)
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
