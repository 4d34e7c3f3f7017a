//! Sequences: ordered steps (email, WhatsApp, task for the owner, wait, branch on
//! engagement) that enrolled leads walk through. Leads enrol by hand or by the sequence's
//! rule (`{"equals": {"source": "webinar"}, "min_score": 30}`), and leave when they reply,
//! book a meeting, convert, unsubscribe or bounce.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::NurtureError;
use super::config::NurtureSection;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::Store;
use crate::store::write::new_id;

/// What a branch looks at: the enrolment's last email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    Opened,
    Clicked,
    Replied,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// Send an email template to the lead.
    Email { template: String },
    /// Send a WhatsApp message: `text` only inside the 24-hour customer-service window
    /// (the lead wrote within 24 h), the approved `template` otherwise.
    Whatsapp {
        #[serde(default)]
        template: Option<String>,
        #[serde(default)]
        language: Option<String>,
        #[serde(default)]
        text: Option<String>,
    },
    /// A task for the lead's owner, due `due_hours` later.
    Task {
        subject: String,
        #[serde(default = "default_due_hours")]
        due_hours: i64,
    },
    /// Wait before the next step.
    Wait {
        #[serde(default)]
        days: i64,
        #[serde(default)]
        hours: i64,
        #[serde(default)]
        seconds: i64,
    },
    /// Go to step `then` (0-based) when the last email was opened / clicked / replied to,
    /// else to `otherwise`.
    Branch {
        on: Engagement,
        then: usize,
        #[serde(rename = "else")]
        otherwise: usize,
    },
}

fn default_due_hours() -> i64 {
    24
}

/// Enrolment by rule: leads whose fields equal these values and whose score is above
/// `min_score`, created after the sequence.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRule {
    #[serde(default)]
    pub equals: BTreeMap<String, String>,
    #[serde(default)]
    pub min_score: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceInput {
    pub name: String,
    /// The sending identity; `nurture.from` when absent.
    #[serde(default)]
    pub from: Option<String>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub enrol: Option<EnrolRule>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sequence {
    pub id: String,
    pub name: String,
    pub from: String,
    pub steps: Vec<Step>,
    pub enrol: Option<EnrolRule>,
    pub active: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Enrolment {
    pub id: String,
    pub sequence_id: String,
    pub lead_id: String,
    pub step: i64,
    pub status: String,
    pub exit_reason: Option<String>,
    pub next_at: String,
    pub last_outbox_id: Option<String>,
    pub created_at: String,
}

/// Checks a sequence against the store's templates; answers why it cannot be saved.
pub async fn check(store: &Store, input: &SequenceInput) -> Result<(), NurtureError> {
    let invalid = |m: String| Err(NurtureError::Invalid(m));
    if input.name.trim().is_empty() {
        return invalid("`name` is empty".into());
    }
    if input.steps.is_empty() {
        return invalid("a sequence needs at least one step".into());
    }
    for (at, step) in input.steps.iter().enumerate() {
        match step {
            Step::Email { template } => {
                if super::templates::by_name(store, template).await?.is_none() {
                    return invalid(format!("steps[{at}]: no email template `{template}`"));
                }
            }
            Step::Whatsapp { template, text, .. } => {
                if template.as_deref().is_none_or(str::is_empty)
                    && text.as_deref().is_none_or(str::is_empty)
                {
                    return invalid(format!("steps[{at}]: give a WhatsApp `template` or `text`"));
                }
            }
            Step::Task { subject, due_hours } => {
                if subject.trim().is_empty() || *due_hours < 0 {
                    return invalid(format!(
                        "steps[{at}]: a task needs a subject and due_hours ≥ 0"
                    ));
                }
            }
            Step::Wait {
                days,
                hours,
                seconds,
            } => {
                if *days < 0 || *hours < 0 || *seconds < 0 {
                    return invalid(format!("steps[{at}]: a wait cannot be negative"));
                }
            }
            Step::Branch {
                then, otherwise, ..
            } => {
                if *then >= input.steps.len() || *otherwise >= input.steps.len() {
                    return invalid(format!("steps[{at}]: branch target out of range"));
                }
                if *then <= at || *otherwise <= at {
                    return invalid(format!(
                        "steps[{at}]: a branch goes forward (targets after step {at}), so no lead loops forever"
                    ));
                }
            }
        }
    }
    if let Some(rule) = &input.enrol {
        for field in rule.equals.keys() {
            if RecordKind::Lead.field(field).is_none() {
                return invalid(format!("enrol.equals: leads have no field `{field}`"));
            }
        }
    }
    Ok(())
}

pub async fn create(
    store: &Store,
    section: &NurtureSection,
    input: &SequenceInput,
) -> Result<Sequence, NurtureError> {
    check(store, input).await?;
    let id = new_id();
    let now = now_timestamp();
    let from = input
        .from
        .clone()
        .filter(|f| f.contains('@'))
        .unwrap_or_else(|| section.from.clone());
    let steps =
        serde_json::to_string(&input.steps).map_err(|e| NurtureError::Invalid(e.to_string()))?;
    let rule = input
        .enrol
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| NurtureError::Invalid(e.to_string()))?;
    let mut tx = store.begin_write().await?;
    let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sequences WHERE name = $1")
        .bind(input.name.trim())
        .fetch_one(&mut *tx)
        .await?;
    if taken > 0 {
        return Err(NurtureError::Conflict(format!(
            "a sequence named `{}` exists",
            input.name.trim()
        )));
    }
    sqlx::query(
        "INSERT INTO sequences (id, name, mailbox, steps, enrol_rule, active, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(input.name.trim())
    .bind(&from)
    .bind(&steps)
    .bind(rule)
    .bind(i64::from(input.active))
    .bind(&now)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get(store, &id).await?.ok_or(NurtureError::NotFound)
}

fn sequence_from(row: &sqlx::any::AnyRow) -> Result<Sequence, NurtureError> {
    let steps: String = row.try_get("steps")?;
    let rule: Option<String> = row.try_get("enrol_rule")?;
    let active: i64 = row.try_get("active")?;
    Ok(Sequence {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        from: row.try_get("mailbox")?,
        steps: serde_json::from_str(&steps)
            .map_err(|e| NurtureError::Invalid(format!("stored steps: {e}")))?,
        enrol: rule.and_then(|r| serde_json::from_str(&r).ok()),
        active: active != 0,
        created_at: row.try_get("created_at")?,
    })
}

const SEQUENCE_COLUMNS: &str = "id, name, mailbox, steps, enrol_rule, active, created_at";

pub async fn get(store: &Store, id: &str) -> Result<Option<Sequence>, NurtureError> {
    let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(sequence_from).transpose()
}

pub async fn list(store: &Store) -> Result<Vec<Sequence>, NurtureError> {
    let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM sequences ORDER BY name");
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await?;
    rows.iter().map(sequence_from).collect()
}

/// Turns a sequence on or off; off ends nothing but takes no further step (its active
/// enrolments exit with `sequence_inactive` when next due).
pub async fn set_active(store: &Store, id: &str, active: bool) -> Result<bool, NurtureError> {
    let mut tx = store.begin_write().await?;
    let done = sqlx::query("UPDATE sequences SET active = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(active))
        .bind(now_timestamp())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub async fn active_with_rules(store: &Store) -> Result<Vec<Sequence>, NurtureError> {
    let sql = format!(
        "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE active = $1 AND enrol_rule IS NOT NULL"
    );
    let rows = sqlx::query(&sql)
        .bind(1_i64)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(sequence_from).collect()
}

/// Enrols a lead in the caller's transaction; `None` when it already is (or was).
pub async fn enrol_in(
    conn: &mut AnyConnection,
    sequence_id: &str,
    lead_id: &str,
) -> Result<Option<String>, NurtureError> {
    let id = new_id();
    let now = now_timestamp();
    let done = sqlx::query(
        "INSERT INTO sequence_enrolments (id, sequence_id, lead_id, step, status, next_at, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7) \
         ON CONFLICT (sequence_id, lead_id) DO NOTHING",
    )
    .bind(&id)
    .bind(sequence_id)
    .bind(lead_id)
    .bind(0_i64)
    .bind(&now)
    .bind(&now)
    .bind(&now)
    .execute(conn)
    .await?;
    Ok((done.rows_affected() > 0).then_some(id))
}

pub async fn enrol(
    store: &Store,
    sequence_id: &str,
    lead_id: &str,
) -> Result<Option<String>, NurtureError> {
    let mut tx = store.begin_write().await?;
    let id = enrol_in(&mut tx, sequence_id, lead_id).await?;
    tx.commit().await?;
    Ok(id)
}

/// Ends every active enrolment of a lead (it unsubscribed, bounced, converted …).
pub async fn exit_all_in(
    conn: &mut AnyConnection,
    lead_id: &str,
    reason: &str,
) -> Result<u64, NurtureError> {
    let done = sqlx::query(
        "UPDATE sequence_enrolments SET status = 'exited', exit_reason = $1, updated_at = $2 \
         WHERE lead_id = $3 AND status = 'active'",
    )
    .bind(reason)
    .bind(now_timestamp())
    .bind(lead_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

fn enrolment_from(row: &sqlx::any::AnyRow) -> Result<Enrolment, NurtureError> {
    Ok(Enrolment {
        id: row.try_get("id")?,
        sequence_id: row.try_get("sequence_id")?,
        lead_id: row.try_get("lead_id")?,
        step: row.try_get("step")?,
        status: row.try_get("status")?,
        exit_reason: row.try_get("exit_reason")?,
        next_at: row.try_get("next_at")?,
        last_outbox_id: row.try_get("last_outbox_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) const ENROLMENT_COLUMNS: &str =
    "id, sequence_id, lead_id, step, status, exit_reason, next_at, last_outbox_id, created_at";

pub(crate) fn enrolment_row(row: &sqlx::any::AnyRow) -> Result<Enrolment, NurtureError> {
    enrolment_from(row)
}

pub async fn enrolments(store: &Store, sequence_id: &str) -> Result<Vec<Enrolment>, NurtureError> {
    let sql = format!(
        "SELECT {ENROLMENT_COLUMNS} FROM sequence_enrolments WHERE sequence_id = $1 ORDER BY created_at"
    );
    let rows = sqlx::query(&sql)
        .bind(sequence_id)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(enrolment_from).collect()
}

/// A text field of a record's fields.
pub(crate) fn text<'a>(fields: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
