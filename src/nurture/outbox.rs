//! The durable email outbox (`email_outbox`). An email is queued in the same transaction
//! as its timeline activity; the sender claims due rows under a lease, sends, and settles
//! each. A crash leaves the row `sending` until its lease ends, when another pass claims
//! it again and sends it with the same Message-ID. A send is only settled `sent` after
//! the server or API accepted it, so nothing queued is lost.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::NurtureError;
use super::config::NurtureSection;
use super::templates::{EmailTemplate, render, rewrite_links};
use super::tracking::{Token, TrackingKey};
use crate::domain::RecordKind;
use crate::domain::value::{format_timestamp, now_timestamp};
use crate::store::read::Record;
use crate::store::write::{apply, new_id};
use crate::store::{Backend, Change, Store, StoreError, WriteContext};

/// One claimed email.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub message_id: String,
    pub mailbox: String,
    pub recipient: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub lead_id: Option<String>,
    pub activity_id: Option<String>,
    /// Attempts before this one.
    pub attempts: i64,
    /// Claims that found the row abandoned mid-send (a process stopped before settling):
    /// above 0, an earlier attempt may have reached the server.
    pub reclaimed: i64,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        provider_id: String,
        mailer: String,
    },
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    Failed {
        error: String,
    },
    /// The address is on the suppression list: never sent.
    Suppressed {
        reason: String,
    },
    /// The mailbox's daily limit is reached: wait, without counting an attempt.
    Deferred {
        at: DateTime<Utc>,
    },
}

/// The domain of an address, for Message-IDs.
fn domain_of(address: &str) -> &str {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("leadgate.local")
}

/// Renders `template` for `lead` with tracking (links through the signed redirect, the
/// open pixel, the unsubscribe link) and queues it with its `email` activity on the lead's
/// timeline, in the caller's transaction. Answers the outbox row's id.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_template(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    section: &NurtureSection,
    key: &TrackingKey,
    lead: &Record,
    template: &EmailTemplate,
    from: &str,
    enrolment_id: Option<&str>,
) -> Result<String, NurtureError> {
    let recipient = lead
        .fields
        .get("email")
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| e.contains('@'))
        .ok_or_else(|| NurtureError::Invalid("the lead has no email address".into()))?;
    let id = new_id();
    let mailbox = super::config::address_of(from);
    let message_id = format!("<{id}@{}>", domain_of(&mailbox));
    let base = section.base();
    let mut vars: Map<String, Value> = lead.fields.clone();
    let unsubscribe = format!(
        "{base}/u/{}",
        key.sign(&Token::Unsubscribe {
            outbox_id: id.clone()
        })
    );
    vars.insert("unsubscribe_url".into(), json!(unsubscribe));
    let rendered = render(template, &vars);
    let mut html = rewrite_links(&rendered.html, |url| {
        let host = super::config::url_host(url)?;
        section.host_allowed(&host).then(|| {
            format!(
                "{base}/t/c/{}",
                key.sign(&Token::Click {
                    outbox_id: id.clone(),
                    url: url.to_owned()
                })
            )
        })
    });
    let pixel = format!(
        r#"<img src="{base}/t/o/{}" width="1" height="1" alt="" style="display:none">"#,
        key.sign(&Token::Open {
            outbox_id: id.clone()
        })
    );
    match html.rfind("</body>") {
        Some(at) => html.insert_str(at, &pixel),
        None => html.push_str(&pixel),
    }
    let activity_id = new_id();
    let now = now_timestamp();
    let activity = json!({
        "activity_type": "email",
        "channel": "email",
        "direction": "outbound",
        "status": "queued",
        "subject": rendered.subject,
        "body": rendered.text,
        "occurred_at": now,
        "lead_id": lead.id,
        "owner_id": lead.fields.get("owner_id"),
        "external_id": message_id,
        "data": {"outbox_id": id, "template": template.name, "from": from,
                 "to": recipient, "enrolment_id": enrolment_id},
    });
    let Value::Object(fields) = activity else {
        unreachable!("a JSON object literal")
    };
    let fields = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
    apply(
        conn,
        ctx,
        vec![Change::Insert {
            kind: RecordKind::Activity,
            id: Some(activity_id.clone()),
            fields,
        }],
    )
    .await?;
    sqlx::query(
        "INSERT INTO email_outbox (id, message_id, mailbox, recipient, subject, html, text, \
         lead_id, activity_id, enrolment_id, status, attempts, next_attempt_at, created_at, \
         updated_at, mailbox_address) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12, $13, $14, $15)",
    )
    .bind(&id)
    .bind(&message_id)
    .bind(from)
    .bind(&recipient)
    .bind(&rendered.subject)
    .bind(&html)
    .bind(&rendered.text)
    .bind(&lead.id)
    .bind(&activity_id)
    .bind(enrolment_id)
    .bind(0_i64)
    .bind(&now)
    .bind(&now)
    .bind(&now)
    .bind(&mailbox)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

const CLAIMED_COLUMNS: &str = "id, message_id, mailbox, recipient, subject, html, text, \
                               lead_id, activity_id, attempts, reclaimed";

fn claimed(row: &sqlx::any::AnyRow) -> Result<Claimed, StoreError> {
    Ok(Claimed {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        mailbox: row.try_get("mailbox")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        html: row.try_get("html")?,
        text: row.try_get("text")?,
        lead_id: row.try_get("lead_id")?,
        activity_id: row.try_get("activity_id")?,
        attempts: row.try_get("attempts")?,
        reclaimed: row.try_get("reclaimed")?,
    })
}

/// Claims up to `limit` due emails for `lease`: pending ones whose time has come, and
/// ones left `sending` by a process whose lease ran out (counted in `reclaimed`: the
/// expressions of `SET` read the row as it was before the update).
pub async fn claim(
    store: &Store,
    limit: usize,
    lease: chrono::Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let lock = match store.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let now = Utc::now();
    let sql = format!(
        "UPDATE email_outbox SET status = 'sending', lease_until = $1, updated_at = $2, \
         reclaimed = reclaimed + CASE WHEN status = 'sending' THEN 1 ELSE 0 END \
         WHERE id IN (SELECT id FROM email_outbox WHERE (status = 'pending' AND next_attempt_at <= $3) \
         OR (status = 'sending' AND lease_until < $4) ORDER BY next_attempt_at LIMIT $5{lock}) \
         RETURNING {CLAIMED_COLUMNS}"
    );
    let mut tx = store.begin_write().await?;
    let rows = sqlx::query(&sql)
        .bind(format_timestamp(now + lease))
        .bind(format_timestamp(now))
        .bind(format_timestamp(now))
        .bind(format_timestamp(now))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter().map(claimed).collect()
}

/// Emails the mailbox `address` (lower-cased addr-spec, see `config::address_of`) has
/// sent since the start of the current UTC day, whatever display names its Froms had.
pub async fn sent_today(store: &Store, address: &str) -> Result<i64, StoreError> {
    let midnight = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(Utc::now);
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_outbox WHERE mailbox_address = $1 AND sent_at >= $2",
    )
    .bind(address)
    .bind(format_timestamp(midnight))
    .fetch_one(store.pool())
    .await?)
}

/// Records how an attempt ended on the outbox row and its activity, in one transaction.
/// A row no longer `sending` (another process took it over) is left alone.
pub async fn settle(
    store: &Store,
    ctx: &WriteContext,
    email: &Claimed,
    outcome: Outcome,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let (status, next, attempts, provider, error, sent_at) = match &outcome {
        Outcome::Sent { provider_id, .. } => (
            "sent",
            now.clone(),
            email.attempts + 1,
            Some(provider_id.clone()),
            None,
            Some(now.clone()),
        ),
        Outcome::Retry { at, error } => (
            "pending",
            format_timestamp(*at),
            email.attempts + 1,
            None,
            Some(error.clone()),
            None,
        ),
        Outcome::Failed { error } => (
            "failed",
            now.clone(),
            email.attempts + 1,
            None,
            Some(error.clone()),
            None,
        ),
        Outcome::Suppressed { reason } => (
            "suppressed",
            now.clone(),
            email.attempts,
            None,
            Some(format!("suppressed: {reason}")),
            None,
        ),
        Outcome::Deferred { at } => (
            "pending",
            format_timestamp(*at),
            email.attempts,
            None,
            Some("daily limit of the mailbox reached".to_owned()),
            None,
        ),
    };
    let mut tx = store.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE email_outbox SET status = $1, next_attempt_at = $2, attempts = $3, \
         provider_id = $4, error = $5, sent_at = $6, lease_until = NULL, updated_at = $7 \
         WHERE id = $8 AND status = 'sending'",
    )
    .bind(status)
    .bind(&next)
    .bind(attempts)
    .bind(provider.as_deref())
    .bind(error.as_deref())
    .bind(sent_at.as_deref())
    .bind(&now)
    .bind(&email.id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(());
    }
    if let Some(activity_id) = &email.activity_id {
        let activity = crate::store::read::fields_in(&mut tx, RecordKind::Activity, activity_id)
            .await?
            .unwrap_or_default();
        if !activity.is_empty() {
            let mut data = activity
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut fields = Map::new();
            match &outcome {
                Outcome::Sent {
                    provider_id,
                    mailer,
                } => {
                    fields.insert("status".into(), json!("sent"));
                    fields.insert("occurred_at".into(), json!(now));
                    data.insert("provider_id".into(), json!(provider_id));
                    data.insert("mailer".into(), json!(mailer));
                    data.remove("last_error");
                    if email.reclaimed > 0 {
                        data.insert("possible_duplicate".into(), json!(true));
                    }
                }
                Outcome::Retry { error, .. } => {
                    data.insert("last_error".into(), json!(error));
                }
                Outcome::Failed { error } => {
                    fields.insert("status".into(), json!("failed"));
                    data.insert("error".into(), json!(error));
                }
                Outcome::Suppressed { reason } => {
                    fields.insert("status".into(), json!("suppressed"));
                    data.insert("suppressed".into(), json!(reason));
                }
                Outcome::Deferred { .. } => {
                    data.insert("deferred".into(), json!("daily limit of the mailbox"));
                }
            }
            data.insert("attempts".into(), json!(attempts));
            fields.insert("data".into(), Value::Object(data));
            apply(
                &mut tx,
                ctx,
                vec![Change::Update {
                    kind: RecordKind::Activity,
                    id: activity_id.clone(),
                    fields,
                    expected_version: None,
                }],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// An outbox row as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxState {
    pub id: String,
    pub message_id: String,
    pub status: String,
    pub attempts: i64,
    pub recipient: String,
    pub error: Option<String>,
    pub provider_id: Option<String>,
    pub sent_at: Option<String>,
    pub lead_id: Option<String>,
    pub activity_id: Option<String>,
    /// Times the row was found abandoned mid-send and claimed again; above 0, an earlier
    /// attempt may have reached the server and the email may have arrived twice.
    pub reclaimed: i64,
}

pub async fn state(store: &Store, id: &str) -> Result<Option<OutboxState>, StoreError> {
    let row = sqlx::query(
        "SELECT id, message_id, status, attempts, recipient, error, provider_id, sent_at, \
         lead_id, activity_id, reclaimed FROM email_outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    row.map(|row| {
        Ok(OutboxState {
            id: row.try_get("id")?,
            message_id: row.try_get("message_id")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            recipient: row.try_get("recipient")?,
            error: row.try_get("error")?,
            provider_id: row.try_get("provider_id")?,
            sent_at: row.try_get("sent_at")?,
            lead_id: row.try_get("lead_id")?,
            activity_id: row.try_get("activity_id")?,
            reclaimed: row.try_get("reclaimed")?,
        })
    })
    .transpose()
}
