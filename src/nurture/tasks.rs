//! Task automation. Tasks are `task` activities (status `open`, `owner_id` the lead's
//! owner, `data.due_at`), as the pipeline's call-back tasks already are. Rules
//! (`[[nurture.task_rules]]`) create them for missed calls, leads without contact for N
//! days and qualified leads untouched for N hours; an open task past due by
//! `escalate_overdue_hours` moves to the owner's manager (the manager of the owner's team,
//! or of the team above when the owner manages their own).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;

use super::NurtureError;
use super::config::{NurtureSection, TaskRule};
use super::engagement::object;
use crate::domain::RecordKind;
use crate::domain::value::{format_timestamp, now_timestamp};
use crate::store::read::Record;
use crate::store::{Change, RequestMeta, Store, WriteContext};

fn context() -> WriteContext {
    WriteContext::new("pipeline:tasks", "nurture", RequestMeta::default())
}

/// Whether the lead wrote on WhatsApp within the last 24 hours (Meta's customer-service
/// window, inside which free-form messages may be sent).
pub async fn whatsapp_window_open(store: &Store, lead_id: &str) -> Result<bool, NurtureError> {
    let since = format_timestamp(Utc::now() - chrono::Duration::hours(24));
    let recent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM activities WHERE lead_id = $1 AND channel = $2 \
         AND direction = 'inbound' AND occurred_at > $3",
    )
    .bind(lead_id)
    .bind(crate::outbound::WHATSAPP)
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    Ok(recent > 0)
}

/// A task for the lead's owner; `key` (when given) makes the rule's task unique.
pub async fn create_task(
    store: &Store,
    lead: &Record,
    subject: &str,
    due_hours: i64,
    because: &str,
) -> Result<(), NurtureError> {
    create_keyed(store, lead, subject, due_hours, because, None).await
}

async fn create_keyed(
    store: &Store,
    lead: &Record,
    subject: &str,
    due_hours: i64,
    because: &str,
    key: Option<&str>,
) -> Result<(), NurtureError> {
    let due = format_timestamp(Utc::now() + chrono::Duration::hours(due_hours));
    store
        .write(
            &context(),
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: object(json!({
                    "activity_type": "task",
                    "channel": "nurture",
                    "status": "open",
                    "subject": subject,
                    "occurred_at": now_timestamp(),
                    "lead_id": lead.id,
                    "owner_id": lead.fields.get("owner_id"),
                    "external_id": key,
                    "data": {"because": because, "due_at": due},
                })),
            }],
        )
        .await?;
    Ok(())
}

async fn task_exists(store: &Store, key: &str) -> Result<bool, NurtureError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM activities WHERE external_id = $1 AND activity_type = 'task'",
    )
    .bind(key)
    .fetch_one(store.pool())
    .await?;
    Ok(n > 0)
}

/// Runs every rule once, then escalates overdue tasks; answers tasks created and moved.
pub async fn run_rules(
    store: &Store,
    section: &NurtureSection,
) -> Result<(usize, usize), NurtureError> {
    let mut created = 0;
    for rule in &section.task_rules {
        created += run_rule(store, rule).await?;
    }
    let escalated = if section.escalate_overdue_hours > 0 {
        escalate(store, section.escalate_overdue_hours).await?
    } else {
        0
    };
    Ok((created, escalated))
}

async fn run_rule(store: &Store, rule: &TaskRule) -> Result<usize, NurtureError> {
    // (lead id, what makes this occurrence unique)
    let candidates: Vec<(String, String)> = match rule.when.as_str() {
        "missed_call" => {
            // The pipeline raises its own call-back task for a missed call from a known
            // lead (the mapping's `follow_up_when`), in the transaction that records the
            // call and with the call's `inbound_id`: such a call has its task already.
            let rows = sqlx::query(
                "SELECT c.id, c.lead_id FROM activities c WHERE c.activity_type = 'call' \
                 AND c.direction = 'inbound' AND c.lead_id IS NOT NULL AND c.created_at > $1 AND \
                 (c.subject LIKE 'missed%' OR c.subject LIKE 'no_answer%' OR c.subject LIKE 'no-answer%' \
                 OR c.subject LIKE 'busy%') AND NOT EXISTS (SELECT 1 FROM activities t WHERE \
                 t.inbound_id = c.inbound_id AND t.activity_type = 'task' AND t.lead_id = c.lead_id) \
                 LIMIT 500",
            )
            .bind(format_timestamp(Utc::now() - chrono::Duration::days(7)))
            .fetch_all(store.pool())
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("lead_id")?, r.try_get("id")?)))
                .collect::<Result<_, sqlx::Error>>()?
        }
        "no_contact" => {
            let cutoff = format_timestamp(Utc::now() - chrono::Duration::days(rule.days.max(1)));
            let rows = sqlx::query(
                "SELECT l.id, l.updated_at FROM leads l WHERE l.status IS DISTINCT FROM 'converted' \
                 AND l.created_at < $1 AND NOT EXISTS (SELECT 1 FROM activities a WHERE \
                 a.lead_id = l.id AND a.created_at > $2 AND a.activity_type IN \
                 ('email', 'message', 'call', 'meeting')) LIMIT 500",
            )
            .bind(&cutoff)
            .bind(&cutoff)
            .fetch_all(store.pool())
            .await?;
            // One task per lead per quiet period (the cutoff's day).
            let period = &cutoff[..10];
            rows.iter()
                .map(|r| Ok((r.try_get("id")?, period.to_owned())))
                .collect::<Result<_, sqlx::Error>>()?
        }
        "qualified_untouched" => {
            let cutoff = format_timestamp(Utc::now() - chrono::Duration::hours(rule.hours.max(1)));
            let rows = sqlx::query(
                "SELECT l.id FROM leads l WHERE l.qualified = $1 AND l.qualified_at < $2 \
                 AND NOT EXISTS (SELECT 1 FROM activities a WHERE a.lead_id = l.id AND \
                 a.created_at > l.qualified_at AND a.direction = 'outbound') LIMIT 500",
            )
            // Booleans are stored as integers on both backends.
            .bind(1_i64)
            .bind(&cutoff)
            .fetch_all(store.pool())
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("id")?, "once".to_owned())))
                .collect::<Result<_, sqlx::Error>>()?
        }
        other => {
            return Err(NurtureError::Invalid(format!(
                "task rule `{}`: unknown `when` `{other}`",
                rule.name
            )));
        }
    };
    let mut created = 0;
    for (lead_id, occurrence) in candidates {
        let key = format!("rule:{}:{lead_id}:{occurrence}", rule.name);
        if task_exists(store, &key).await? {
            continue;
        }
        let Some(lead) = store.get(RecordKind::Lead, &lead_id).await? else {
            continue;
        };
        create_keyed(
            store,
            &lead,
            &rule.subject,
            rule.due_hours,
            &format!("rule:{}", rule.name),
            Some(&key),
        )
        .await?;
        created += 1;
    }
    Ok(created)
}

/// The manager above `user_id`: their team's manager, or the parent team's when they
/// manage their own team.
pub async fn manager_of(store: &Store, user_id: &str) -> Result<Option<String>, NurtureError> {
    let Some(user) = store.user(user_id).await? else {
        return Ok(None);
    };
    let mut team_id = user.team_id;
    for _ in 0..16 {
        let Some(id) = team_id else { return Ok(None) };
        let Some(team) = store.team(&id).await? else {
            return Ok(None);
        };
        match team.manager_id {
            Some(manager) if manager != user_id => return Ok(Some(manager)),
            _ => team_id = team.parent_id,
        }
    }
    Ok(None)
}

async fn escalate(store: &Store, overdue_hours: i64) -> Result<usize, NurtureError> {
    let rows = sqlx::query(
        "SELECT id FROM activities WHERE activity_type = 'task' AND status = 'open' \
         AND owner_id IS NOT NULL LIMIT 2000",
    )
    .fetch_all(store.pool())
    .await?;
    let cutoff = Utc::now() - chrono::Duration::hours(overdue_hours);
    let mut moved = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let Some(task) = store.get(RecordKind::Activity, &id).await? else {
            continue;
        };
        let mut data = task
            .fields
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if data.contains_key("escalated_from") {
            continue;
        }
        let due = data
            .get("due_at")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if due.is_none_or(|due| due > cutoff) {
            continue;
        }
        let Some(owner) = task.fields.get("owner_id").and_then(Value::as_str) else {
            continue;
        };
        let Some(manager) = manager_of(store, owner).await? else {
            continue;
        };
        data.insert("escalated_from".into(), json!(owner));
        data.insert("escalated_at".into(), json!(now_timestamp()));
        store
            .write(
                &context(),
                vec![Change::Update {
                    kind: RecordKind::Activity,
                    id: id.clone(),
                    fields: object(json!({"owner_id": manager, "data": data})),
                    expected_version: Some(task.version),
                }],
            )
            .await?;
        moved += 1;
    }
    Ok(moved)
}
